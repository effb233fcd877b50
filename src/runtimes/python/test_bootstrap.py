"""Real-process tests of the Python bootstrap: each test starts bootstrap.py on a free loopback
port with a function source, and talks HTTP to it."""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    """One bootstrap process serving `source`."""

    def __init__(self, source, handler="", env=None, deps=None):
        self.dir = tempfile.TemporaryDirectory()
        path = os.path.join(self.dir.name, "function.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(source))
        self.port = free_port()
        environment = dict(os.environ, PORT=str(self.port), KUBEFN_SOURCE=path, KUBEFN_HANDLER=handler,
                           KUBEFN_BIND="127.0.0.1", KUBEFN_FUNCTION_NAME="fn-under-test", KUBEFN_TIMEOUT="30",
                           KUBEFN_MEMORY_LIMIT="128Mi", PYTHONUNBUFFERED="1")
        environment.update(env or {})
        if deps:
            environment["KUBEFN_DEPS"] = deps
        self.process = subprocess.Popen([sys.executable, BOOTSTRAP], env=environment, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"bootstrap exited with {self.process.returncode}: {self.process.stderr.read()}")
            try:
                status, _, _ = self.request("GET", "/_/ready")
                if status == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("bootstrap did not become ready")

    def request(self, method, path, body=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def exit_and_output(self, timeout=10):
        code = self.process.wait(timeout=timeout)
        return code, self.process.stdout.read(), self.process.stderr.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()
        self.dir.cleanup()


class BootstrapTest(unittest.TestCase):
    def serve(self, source, handler="", **kwargs):
        replica = Replica(source, handler, **kwargs)
        self.addCleanup(replica.stop)
        return replica.wait_ready()

    def test_openfaas_python3_handle_req(self):
        r = self.serve("""
            def handle(req):
                return "hello " + req
        """)
        status, headers, body = r.request("POST", "/", body=b"world")
        self.assertEqual((status, body), (200, b"hello world"))
        self.assertEqual(headers["Content-Type"], "text/plain; charset=utf-8")

    def test_dicts_become_json_and_bytes_stay_bytes(self):
        r = self.serve("""
            def handle(req):
                if req == "bytes":
                    return b"\\x00\\x01"
                return {"echo": req, "n": [1, 2]}
        """)
        status, headers, body = r.request("POST", "/", body=b"hi")
        self.assertEqual(json.loads(body), {"echo": "hi", "n": [1, 2]})
        self.assertEqual(headers["Content-Type"], "application/json")
        status, headers, body = r.request("POST", "/", body=b"bytes")
        self.assertEqual((body, headers["Content-Type"]), (b"\x00\x01", "application/octet-stream"))

    def test_openfaas_python3_http_event_and_context(self):
        r = self.serve("""
            def handle(event, context):
                return {
                    "statusCode": 201,
                    "body": {"method": event.method, "path": event.path, "query": event.query,
                             "body": event.body.decode(), "agent": event.headers.get("x-test"),
                             "any_case": event.headers.get("X-Test"), "has": "X-TEST" in event.headers},
                    "headers": {"X-Handled": "yes"},
                }
        """)
        status, headers, body = r.request("PUT", "/items/7?color=red", body=b"payload", headers={"X-Test": "t1"})
        self.assertEqual(status, 201)
        self.assertEqual(headers["X-Handled"], "yes")
        self.assertEqual(json.loads(body), {"method": "PUT", "path": "/items/7", "query": {"color": "red"},
                                            "body": "payload", "agent": "t1", "any_case": "t1", "has": True})

    def test_kubeless_handler_event_and_context(self):
        r = self.serve("""
            def handler(event, context):
                data = event["data"]
                return {
                    "data": data.decode() if isinstance(data, bytes) else data,
                    "data_type": type(data).__name__,
                    "header": event["extensions"]["request"].get_header("X-Trace"),
                    "has_id": bool(event["event-id"]),
                    "type": event["event-type"],
                    "namespace": event["event-namespace"],
                    "has_time": bool(event["event-time"]),
                    "request_path": event["extensions"]["request"].path,
                    "function": context["function-name"],
                    "timeout": context["timeout"],
                    "runtime": context["runtime"].startswith("python3"),
                    "memory": context["memory-limit"],
                }
        """)
        status, _, body = r.request("POST", "/k", body=json.dumps({"a": 1}),
                                    headers={"Content-Type": "application/json", "X-Trace": "t-1"})
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"data": {"a": 1}, "data_type": "dict", "header": "t-1", "has_id": True,
                                            "type": "application/json", "namespace": "kubefn", "has_time": True,
                                            "request_path": "/k", "function": "fn-under-test", "timeout": 30.0,
                                            "runtime": True, "memory": "128Mi"})
        # Kubeless reads any other body as bytes (bottle's request.body.read()).
        status, _, body = r.request("POST", "/k", body=b"plain text", headers={"Content-Type": "text/plain"})
        self.assertEqual((json.loads(body)["data"], json.loads(body)["data_type"]), ("plain text", "bytes"))

    def test_kubeless_samples_any_handler_name_and_bytes_back(self):
        # Kubeless's own examples, helloget.py and hellowithdata.py, unchanged.
        r = self.serve("""
            def foo(event, context):
                return "hello world"
        """, handler="foo")
        self.assertEqual(r.request("GET", "/")[::2], (200, b"hello world"))
        r = self.serve("""
            def handler(event, context):
                print (event)
                return event['data']
        """)
        status, headers, body = r.request("POST", "/", body=b"\x00raw", headers={"Content-Type": "application/octet-stream"})
        self.assertEqual((status, body, headers["Content-Type"]), (200, b"\x00raw", "application/octet-stream"))

    def test_openfaas_python3_http_format_response(self):
        # python3-http's format_response: no statusCode is 200, no body is empty, a dict body is
        # JSON, bytes stay bytes, anything else is str()'d, headers may be a dict or pairs, None
        # is an empty 200.
        r = self.serve("""
            def handle(event, context):
                kind = event.query.get("kind")
                if kind == "none":
                    return None
                if kind == "nobody":
                    return {"headers": [("X-Pairs", "yes")]}
                if kind == "list":
                    return {"statusCode": 202, "body": [1, 2]}
                if kind == "bytes":
                    return {"body": b"\x01\x02", "headers": {"Content-Type": "image/png"}}
                if kind == "dict":
                    return {"body": {"colors": event.query.getlist("color"), "host": context.hostname}}
                return {"statusCode": 200, "body": "Hello from OpenFaaS!"}
        """, env={"HOSTNAME": "replica-1"})
        self.assertEqual(r.request("GET", "/")[::2], (200, b"Hello from OpenFaaS!"))
        self.assertEqual(r.request("GET", "/?kind=none")[::2], (200, b""))
        status, headers, body = r.request("GET", "/?kind=nobody")
        self.assertEqual((status, body, headers["X-Pairs"]), (200, b"", "yes"))
        self.assertEqual(r.request("GET", "/?kind=list")[::2], (202, b"[1, 2]"))
        status, headers, body = r.request("GET", "/?kind=bytes")
        self.assertEqual((body, headers["Content-Type"]), (b"\x01\x02", "image/png"))
        status, headers, body = r.request("GET", "/?kind=dict&color=red&color=blue")
        self.assertEqual(json.loads(body), {"colors": ["red", "blue"], "host": "replica-1"})
        self.assertEqual(headers["Content-Type"], "application/json")

    def test_python3_flask_raw_body_hands_over_bytes(self):
        r = self.serve("""
            def handle(req):
                return type(req).__name__ + ":" + repr(req)
        """, env={"RAW_BODY": "true"})
        self.assertEqual(r.request("POST", "/", body=b"hi")[::2], (200, b"bytes:b'hi'"))

    def test_wsgi_app(self):
        r = self.serve("""
            def app(environ, start_response):
                body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                start_response("202 Accepted", [("Content-Type", "text/plain"), ("X-Path", environ["PATH_INFO"])])
                return [b"wsgi:", body, b":" + environ["QUERY_STRING"].encode()]
        """)
        status, headers, body = r.request("POST", "/w/x?q=1", body=b"in")
        self.assertEqual((status, headers["X-Path"], body), (202, "/w/x", b"wsgi:in:q=1"))

    def test_the_handler_field_picks_the_entry_point(self):
        r = self.serve("""
            def handle(req):
                return "wrong one"
            def greet(req):
                return "greet " + req
        """, handler="greet")
        self.assertEqual(r.request("POST", "/", body=b"x")[2], b"greet x")

    def test_detection_is_logged(self):
        r = self.serve("""
            def handler(event, context):
                return "ok"
        """)
        r.process.terminate()
        _, stdout, _ = r.exit_and_output()
        self.assertIn("detected handler(event, context) (Kubeless style)", stdout)

    def test_an_exception_is_a_500_and_the_replica_keeps_serving(self):
        r = self.serve("""
            def handle(req):
                if req == "boom":
                    raise ValueError("bad input: boom")
                return "fine"
        """)
        status, _, body = r.request("POST", "/", body=b"boom")
        self.assertEqual(status, 500)
        self.assertIn(b"ValueError: bad input: boom", body)
        self.assertEqual(r.request("POST", "/", body=b"ok")[:3:2], (200, b"fine"))

    def test_a_handler_past_its_timeout_gets_a_504_and_the_replica_keeps_serving(self):
        r = self.serve("""
            import time
            def handle(req):
                if req == "hang":
                    time.sleep(30)
                return "quick"
        """, env={"KUBEFN_TIMEOUT": "0.5"})
        started = time.monotonic()
        status, _, body = r.request("POST", "/", body=b"hang")
        self.assertEqual(status, 504)
        self.assertIn(b"did not answer within its timeout of 0.5 s", body)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(r.request("POST", "/", body=b"ok")[::2], (200, b"quick"))

    def test_requests_are_served_concurrently(self):
        # Each call waits until four calls are inside the handler at once; served one at a time,
        # the barrier would break and every call would answer 500.
        r = self.serve("""
            import threading
            together = threading.Barrier(4, timeout=10)
            def handle(req):
                together.wait()
                return "together"
        """)
        results = []
        threads = [threading.Thread(target=lambda: results.append(r.request("GET", "/")[::2])) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [(200, b"together")] * 4)

    def test_chunked_request_bodies(self):
        r = self.serve("""
            def handle(req):
                return req.upper()
        """)
        connection = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
        connection.request("POST", "/", body=iter([b"abc", b"def"]), encode_chunked=True)
        self.assertEqual(connection.getresponse().read(), b"ABCDEF")
        connection.close()

    def test_dependencies_directory_is_importable(self):
        deps = tempfile.TemporaryDirectory()
        self.addCleanup(deps.cleanup)
        with open(os.path.join(deps.name, "greeting_lib.py"), "w") as f:
            f.write("WORD = 'from-deps'\n")
        r = self.serve("""
            import greeting_lib
            def handle(req):
                return greeting_lib.WORD
        """, deps=deps.name)
        self.assertEqual(r.request("GET", "/")[2], b"from-deps")


class WarmPoolTest(unittest.TestCase):
    def test_a_warm_process_takes_a_function_once_and_then_serves_it(self):
        r = Replica("", env={"KUBEFN_POOL": "1", "KUBEFN_SOURCE": ""})
        self.addCleanup(r.stop)
        deadline = time.monotonic() + 10
        while True:
            try:
                if r.request("GET", "/_/health")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.assertEqual(r.request("GET", "/_/ready")[0], 503, "not ready before it has a function")
        self.assertEqual(r.request("POST", "/")[0], 503)
        source = os.path.join(r.dir.name, "late.py")
        with open(source, "w") as f:
            f.write("import os\ndef handle(req):\n    return os.environ['GREETING'] + ' ' + req + ' from ' + os.getcwd()\n")
        job = {"source": source, "handler": "", "env": {"GREETING": "hej"}, "dir": r.dir.name, "timeout_s": 5}
        status, _, _ = r.request("POST", "/_/specialize", body=json.dumps(job).encode())
        self.assertEqual(status, 200)
        self.assertEqual(r.request("GET", "/_/ready")[0], 200)
        self.assertEqual(r.request("POST", "/", body=b"ada")[::2], (200, f"hej ada from {r.dir.name}".encode()))
        self.assertEqual(r.request("POST", "/_/specialize", body=json.dumps(job).encode())[0], 409)

    def test_a_function_that_cannot_load_ends_the_warm_process(self):
        r = Replica("", env={"KUBEFN_POOL": "1", "KUBEFN_SOURCE": ""})
        self.addCleanup(r.stop)
        source = os.path.join(r.dir.name, "broken.py")
        with open(source, "w") as f:
            f.write("def handle(req)\n")
        for _ in range(200):
            try:
                status, _, body = r.request("POST", "/_/specialize", body=json.dumps({"source": source}).encode())
                break
            except OSError:
                time.sleep(0.05)
        self.assertEqual(status, 422)
        self.assertIn(b"syntax error", body)
        code, _, stderr = r.exit_and_output()
        self.assertEqual(code, 3)
        self.assertIn("cannot load the function", stderr)


class BadFunctionTest(unittest.TestCase):
    def failing(self, source, handler=""):
        replica = Replica(source, handler)
        self.addCleanup(replica.stop)
        code, _, stderr = replica.exit_and_output()
        self.assertEqual(code, 3)
        return stderr

    def test_syntax_error(self):
        self.assertIn("syntax error in the function source, line 1: expected ':'", self.failing("def handle(req)\n    return req\n"))

    def test_missing_handler(self):
        self.assertIn("no handler found", self.failing("x = 1\n"))

    def test_configured_handler_missing(self):
        self.assertIn("the handler 'nope' is not defined", self.failing("def handle(req):\n    return req\n", handler="nope"))

    def test_missing_dependency(self):
        self.assertIn("declare it in the requirements", self.failing("import surely_not_installed_xyz\n"))

    def test_error_at_import(self):
        self.assertIn("raised RuntimeError while loading: nope", self.failing("raise RuntimeError('nope')\n"))


class SocketAndStopTest(unittest.TestCase):
    """The local runtime's way: a Unix socket instead of a port, and SIGTERM while busy."""

    def test_serves_on_a_unix_socket(self):
        with tempfile.TemporaryDirectory() as run:
            path = os.path.join(run, "function.py")
            with open(path, "w") as f:
                f.write("def handle(event, context):\n    return {'statusCode': 200, 'body': event.path}\n")
            sock = os.path.join(run, "http.sock")
            environment = dict(os.environ, KUBEFN_SOCKET=sock, KUBEFN_SOURCE=path, PYTHONUNBUFFERED="1")
            environment.pop("PORT", None)
            process = subprocess.Popen([sys.executable, BOOTSTRAP], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                answer = b""
                for _ in range(200):
                    try:
                        client = socket.socket(socket.AF_UNIX)
                        client.connect(sock)
                        client.sendall(b"GET /over/the/socket HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        while chunk := client.recv(4096):
                            answer += chunk
                        client.close()
                        break
                    except OSError:
                        time.sleep(0.05)
                self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)
                self.assertTrue(answer.endswith(b"/over/the/socket"), answer)
            finally:
                process.terminate()
                process.wait(timeout=10)
                process.stdout.close()
                process.stderr.close()

    def test_sigterm_finishes_the_request_in_flight_then_exits(self):
        replica = Replica("""
            import time
            def handle(req):
                time.sleep(1)
                return 'finished ' + req
        """).wait_ready()
        try:
            answers = []
            caller = threading.Thread(target=lambda: answers.append(replica.request("POST", "/", body=b"work")))
            caller.start()
            time.sleep(0.3)
            replica.process.terminate()
            caller.join(timeout=10)
            self.assertEqual(answers[0][0], 200)
            self.assertEqual(answers[0][2], b"finished work")
            self.assertEqual(replica.process.wait(timeout=10), 0)
        finally:
            replica.stop()

    def test_sigterm_under_a_flood_of_connections_exits_cleanly(self):
        # The signal lands wherever the main thread is, also while it starts a handler thread.
        replica = Replica("def handle(req):\n    return req\n").wait_ready()
        stop = threading.Event()

        def flood():
            while not stop.is_set():
                try:
                    replica.request("POST", "/", body=b"x")
                except OSError:
                    pass

        callers = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
        try:
            for caller in callers:
                caller.start()
            time.sleep(0.5)
            replica.process.terminate()
            self.assertEqual(replica.process.wait(timeout=10), 0)
            self.assertNotIn("Traceback", replica.process.stderr.read())
        finally:
            stop.set()
            replica.stop()

    def test_sigterm_when_idle_exits_at_once(self):
        replica = Replica("def handle(req):\n    return req\n").wait_ready()
        try:
            started = time.monotonic()
            replica.process.terminate()
            self.assertEqual(replica.process.wait(timeout=10), 0)
            self.assertLess(time.monotonic() - started, 2)
        finally:
            replica.stop()


if __name__ == "__main__":
    unittest.main()
