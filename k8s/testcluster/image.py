#!/usr/bin/env python3
"""Writes a container image as an archive `ctr images import` takes (the `docker save`
layout: manifest.json, the image config and the layers), without a container engine: the test
node reaches no registry, so its images are built here.

  image.py OUT.tar --tag NAME[:TAG] [--rootfs ROOTFS.tar] [--file SRC:DEST ...] [--dir SRC:DEST ...]
           [--user UID] [--env K=V ...] [--workdir DIR] [--entrypoint ARG ...] [--cmd ARG ...]

--rootfs takes a root filesystem tarball (mmdebstrap's output) as the first layer as it is;
--file (single files, made executable: static programs) and --dir (directory trees, readable)
go into one more layer on top.
"""
import argparse
import hashlib
import io
import json
import os
import tarfile
import tempfile


def file_layer(path, files, dirs):
    """A layer holding each file SRC at DEST (executable) and each directory tree SRC at DEST
    (readable), owned by root, with the parent directories of each DEST."""
    def owned_by_root(info, mode):
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = mode
        info.mtime = 0
        return info

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as layer:
        parents = set()
        for spec in files + dirs:
            parts = spec.split(":", 1)[1].strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                parents.add("/".join(parts[:i]))
        for parent in sorted(parents):
            layer.addfile(_dir_info(parent, owned_by_root))
        for spec in files:
            src, dest = spec.split(":", 1)
            info = owned_by_root(layer.gettarinfo(src, arcname=dest.lstrip("/")), 0o755)
            with open(src, "rb") as f:
                layer.addfile(info, f)
        for spec in dirs:
            src, dest = spec.split(":", 1)
            for root, subdirs, names in os.walk(src):
                subdirs.sort()
                relative = os.path.relpath(root, src)
                target = dest.strip("/") if relative == "." else dest.strip("/") + "/" + relative
                layer.addfile(_dir_info(target, owned_by_root))
                for name in sorted(names):
                    info = owned_by_root(layer.gettarinfo(os.path.join(root, name), arcname=target + "/" + name), 0o644)
                    with open(os.path.join(root, name), "rb") as f:
                        layer.addfile(info, f)


def _dir_info(name, owned_by_root):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return owned_by_root(info, 0o755)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--rootfs")
    parser.add_argument("--file", action="append", default=[])
    parser.add_argument("--dir", action="append", default=[])
    parser.add_argument("--user", default="")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--workdir", default="/")
    parser.add_argument("--entrypoint", nargs="*")
    parser.add_argument("--cmd", nargs="*")
    args = parser.parse_args()
    if not (args.rootfs or args.file or args.dir):
        parser.error("give --rootfs, --file or --dir")

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.out))) as work:
        layers = []
        if args.rootfs:
            layers.append(args.rootfs)
        if args.file or args.dir:
            layers.append(os.path.join(work, "files.tar"))
            file_layer(layers[-1], args.file, args.dir)
        diff_ids = ["sha256:" + sha256_of(layer) for layer in layers]
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + args.env
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": env, "WorkingDir": args.workdir, "User": args.user,
                       "Entrypoint": args.entrypoint, "Cmd": args.cmd},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "k8s/testcluster/image.py"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        names = [f"layer{i}.tar" for i in range(len(layers))]
        manifest = [{"Config": config_name, "RepoTags": [args.tag], "Layers": names}]
        partial = args.out + ".partial"
        with tarfile.open(partial, "w") as archive:
            for name, data in ((config_name, config_bytes), ("manifest.json", json.dumps(manifest).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            for layer, name in zip(layers, names):
                archive.add(layer, arcname=name)
        os.replace(partial, args.out)


if __name__ == "__main__":
    main()
