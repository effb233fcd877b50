#!/usr/bin/env python3
"""Writes a one-layer container image as an archive `ctr images import` takes (the
`docker save` layout: manifest.json, the image config and the layer), without a container
engine: the test node reaches no registry, so its images are built here.

  image.py OUT.tar --tag NAME[:TAG] (--rootfs ROOTFS.tar | --file SRC:DEST ...)
           [--user UID] [--env K=V ...] [--workdir DIR] [--entrypoint ARG ...] [--cmd ARG ...]

--rootfs takes a root filesystem tarball (mmdebstrap's output) as the layer as it is; --file
puts single files (static programs) into an otherwise empty layer.
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile


def file_layer(path, files):
    """A layer holding each SRC at DEST, owned by root, executable."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as layer:
        for spec in files:
            src, dest = spec.split(":", 1)
            info = layer.gettarinfo(src, arcname=dest.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755
            info.mtime = 0
            with open(src, "rb") as f:
                layer.addfile(info, f)


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
    parser.add_argument("--user", default="")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--workdir", default="/")
    parser.add_argument("--entrypoint", nargs="*")
    parser.add_argument("--cmd", nargs="*")
    args = parser.parse_args()
    if bool(args.rootfs) == bool(args.file):
        parser.error("give either --rootfs or --file")

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.out))) as work:
        layer = os.path.join(work, "layer.tar")
        if args.rootfs:
            shutil.copyfile(args.rootfs, layer)
        else:
            file_layer(layer, args.file)
        diff_id = "sha256:" + sha256_of(layer)
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + args.env
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": env, "WorkingDir": args.workdir, "User": args.user,
                       "Entrypoint": args.entrypoint, "Cmd": args.cmd},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "k8s/testcluster/image.py"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest = [{"Config": config_name, "RepoTags": [args.tag], "Layers": ["layer.tar"]}]
        partial = args.out + ".partial"
        with tarfile.open(partial, "w") as archive:
            for name, data in ((config_name, config_bytes), ("manifest.json", json.dumps(manifest).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            archive.add(layer, arcname="layer.tar")
        os.replace(partial, args.out)


if __name__ == "__main__":
    main()
