"""kubefn's Python bootstrap: serves one function over HTTP on $PORT (or the socket file $KUBEFN_SOCKET).

Standard library only. The same file runs as a local replica and inside a pod. It loads the
function's source and adapts the common handler conventions so existing functions run
unchanged:

* ``handle(req)``                 OpenFaaS python3 and python3-flask: the body as str in (bytes with
                                  RAW_BODY=true); the answer as Flask makes one of the return value
                                  (str, bytes, dict/list as JSON, (body, status[, headers]))
* ``handle(event, context)``      OpenFaaS python3-http: event.body (bytes), .headers, .method, .query
                                  (first value per name, .getlist for all), .path; context.hostname;
                                  the return value read as the template's format_response reads it
* ``NAME(event, context)``        Kubeless (any other name, e.g. ``handler``): event["data"] (bytes, or
                                  the parsed JSON for a JSON body), event["event-id"], ...;
                                  context["function-name"], ["timeout"], ["runtime"], ["memory-limit"]
* a WSGI ``app``                  e.g. Flask, when declared in the requirements

Where kubefn differs from those templates on purpose (the README lists it): a str answer is
text/plain rather than Flask's text/html, the classic python3 watchdog's trailing newline (it
print()s the answer) is not added, and a dict with "statusCode" from a Kubeless handler is read
as a response, as from python3-http.

Environment:
  PORT                  port to listen on (this or KUBEFN_SOCKET is required)
  KUBEFN_SOCKET         path of a Unix socket to listen on instead of a port (the local runtime's
                        sandboxed replicas have no network of their own to listen on)
  KUBEFN_SOURCE         path of the function's source file (required)
  KUBEFN_HANDLER        entry point; empty to detect one (the choice is logged)
  KUBEFN_DEPS           directory with installed dependencies, added to sys.path (optional)
  KUBEFN_BIND           address to bind (default 0.0.0.0; the local runtime uses 127.0.0.1)
  KUBEFN_TIMEOUT        seconds an invocation may take before it is answered with 504 (default 60)
  KUBEFN_POOL=1         start without a function (a warm pool process); POST /_/specialize with
                        {"source", "handler", "deps", "env", "dir", "timeout_s"} loads one later
  KUBEFN_FUNCTION_NAME, KUBEFN_TIMEOUT, KUBEFN_MEMORY_LIMIT   passed to the handler's context

SIGTERM stops accepting connections, lets requests in flight finish (up to the timeout) and
exits 0, at once when idle: a pod's PID 1 and a replaced local replica stop in milliseconds.

Reserved paths: GET /_/ready (200 once the function is loaded) and GET /_/health.
A function that cannot be loaded makes the process exit with status 3 after saying why on
stderr; an exception in a handler answers 500 with the message and the process keeps serving.
"""

import datetime
import importlib.util
import inspect
import io
import json
import os
import selectors
import signal
import socket
import socketserver
import sys
import threading
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOAD_ERROR_EXIT = 3
READY_PATH = "/_/ready"
HEALTH_PATH = "/_/health"
SPECIALIZE_PATH = "/_/specialize"
DETECT_ORDER = ("handle", "handler", "main", "app")


def log(message):
    print(f"kubefn: {message}", flush=True)


class LoadError(Exception):
    """The function could not be loaded; the message says what to fix."""


# ---------------------------------------------------------------------------------------------
# Loading and convention detection


def load_module(source_path, deps_dir):
    if deps_dir and os.path.isdir(deps_dir):
        sys.path.insert(0, deps_dir)
    sys.path.insert(0, os.path.dirname(os.path.abspath(source_path)))
    spec = importlib.util.spec_from_file_location("function", source_path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot read the function source at {source_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["function"] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise LoadError(f"syntax error in the function source, line {error.lineno}: {error.msg}") from error
    except ImportError as error:
        raise LoadError(f"the function imports something that is not installed ({error}); declare it in the requirements") from error
    except Exception as error:  # noqa: BLE001 - any failure at import time is the function's
        raise LoadError(f"the function source raised {type(error).__name__} while loading: {error}") from error
    return module


def resolve(module, name):
    target = module
    for part in name.split("."):
        if not hasattr(target, part):
            raise LoadError(f"the handler {name!r} is not defined in the function source")
        target = getattr(target, part)
    return target


def positional_count(func):
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p for p in signature.parameters.values() if p.kind in kinds]
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        return 2
    return len(params)


def is_wsgi_app(name, target):
    if hasattr(target, "wsgi_app"):
        return True
    if inspect.isclass(target) or not callable(target):
        return False
    call = target if inspect.isfunction(target) or inspect.ismethod(target) else getattr(target, "__call__", target)
    try:
        names = list(inspect.signature(call).parameters)
    except (TypeError, ValueError):
        return name == "app"
    return names[:2] == ["environ", "start_response"] or (name == "app" and len(names) == 2)


def choose_convention(name, target):
    """Returns (convention, description) for a handler object."""
    if is_wsgi_app(name, target):
        return "wsgi", f"WSGI app {name!r}"
    if not callable(target):
        raise LoadError(f"the handler {name!r} is not callable")
    count = positional_count(target)
    if count == 1:
        return "req", f"{name}(req) (OpenFaaS python3 style)"
    if count == 2:
        # OpenFaaS's python3-http template always calls handler.handle; Kubeless calls whatever
        # name the function declares (handler, foo, hello ...).
        if name.split(".")[-1] == "handle":
            return "openfaas-http", f"{name}(event, context) (OpenFaaS python3-http style)"
        return "kubeless", f"{name}(event, context) (Kubeless style)"
    if count == 0:
        return "none", f"{name}() (no arguments)"
    raise LoadError(f"the handler {name!r} takes {count} arguments; use handle(req), handle(event, context) or a WSGI app")


def load_function(source_path, handler_name, deps_dir):
    module = load_module(source_path, deps_dir)
    if handler_name:
        target = resolve(module, handler_name)
        convention, description = choose_convention(handler_name, target)
        log(f"using {description} as configured")
        return convention, target
    for name in DETECT_ORDER:
        if hasattr(module, name):
            convention, description = choose_convention(name, getattr(module, name))
            log(f"no handler configured; detected {description}")
            return convention, getattr(module, name)
    raise LoadError("no handler found: define handle(req), handle(event, context), handler(event, context) or a WSGI app, or set the function's handler field")


# ---------------------------------------------------------------------------------------------
# Events, contexts and responses


class Event(dict):
    """Both conventions at once: a Kubeless event dict and an OpenFaaS python3-http event."""

    def __init__(self, request):
        # Kubeless reads the body with bottle's request.body.read(): bytes, unless it is JSON.
        data = request.body
        if request.is_json and request.body:
            try:
                data = json.loads(request.body)
            except ValueError:
                data = request.body
        super().__init__({
            "data": data,
            "event-id": request.headers.get("x-request-id") or str(uuid.uuid4()),
            "event-type": request.headers.get("event-type") or request.headers.get("content-type") or "",
            "event-time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "event-namespace": request.headers.get("event-namespace") or "kubefn",
            "extensions": {"request": request},
        })
        self.body = request.body
        self.headers = request.headers
        self.method = request.method
        self.query = request.query
        self.path = request.path


class Context(dict):
    """A Kubeless context dict whose keys are also attributes (OpenFaaS passes a context object)."""

    def __init__(self, timeout_s):
        super().__init__({
            "function-name": os.environ.get("KUBEFN_FUNCTION_NAME", ""),
            # Kubeless's Python runtime gives the timeout as a float of seconds.
            "timeout": float(timeout_s),
            "runtime": f"python{sys.version_info.major}.{sys.version_info.minor}",
            "memory-limit": os.environ.get("KUBEFN_MEMORY_LIMIT", ""),
        })
        self.hostname = os.environ.get("HOSTNAME") or "localhost"

    def __getattr__(self, name):
        key = name.replace("_", "-")
        if key in self:
            return self[key]
        raise AttributeError(name)


class Headers(dict):
    """Request headers by lower-case name, looked up case-insensitively (as Flask's are)."""

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def __contains__(self, name):
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name, default=None):
        return super().get(name.lower(), default) if isinstance(name, str) else default


class QueryArgs(dict):
    """The query string as Flask's request.args reads it: the first value of each name, and
    every value through getlist()."""

    def __init__(self, raw_query):
        self.every = parse_qs(raw_query, keep_blank_values=True)
        super().__init__({name: values[0] for name, values in self.every.items()})

    def getlist(self, name):
        return list(self.every.get(name, []))


class Request:
    """The parts of an HTTP request every convention needs. Kubeless hands its functions
    bottle's request as event["extensions"]["request"], so this also answers bottle's
    get_header() and json."""

    def __init__(self, method, target, headers, body):
        parts = urlsplit(target)
        self.method = method
        self.path = parts.path
        self.raw_query = parts.query
        self.query = QueryArgs(parts.query)
        self.headers = Headers({k.lower(): v for k, v in headers.items()})
        self.body = body
        self.body_text = body.decode("utf-8", errors="replace")
        content_type = self.headers.get("content-type", "")
        self.is_json = content_type.split(";")[0].strip().lower() in ("application/json", "text/json") or content_type.endswith("+json")

    def get_header(self, name, default=None):
        return self.headers.get(name, default)

    @property
    def json(self):
        return json.loads(self.body) if self.is_json and self.body else None


def encode_body(body, headers):
    """Turns a handler's body into bytes, choosing a content type when none was set."""
    has_type = any(k.lower() == "content-type" for k in headers)
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray)):
        if not has_type:
            headers["Content-Type"] = "application/octet-stream"
        return bytes(body)
    if isinstance(body, str):
        if not has_type:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        return body.encode("utf-8")
    if not has_type:
        headers["Content-Type"] = "application/json"
    return json.dumps(body, default=str).encode("utf-8")


def header_pairs(headers):
    """A handler's headers, given as a dict or as (name, value) pairs, as Flask takes both."""
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    return {str(name): str(value) for name, value in pairs}


def to_openfaas_http_response(result):
    """(status, headers, body bytes) as python3-http's format_response makes them: None is an
    empty 200; a dict gives statusCode (default 200), headers, and a body that is JSON for a
    dict, the bytes themselves for bytes, and str() of anything else; any other value is
    handed to Flask as it is."""
    if result is None:
        return 200, {}, b""
    if not isinstance(result, dict):
        return to_response(result)
    headers = header_pairs(result.get("headers"))
    body = result.get("body", "")
    if not isinstance(body, (dict, bytes, bytearray)):
        body = str(body)
    return int(result.get("statusCode", 200)), headers, encode_body(body, headers)


def to_response(result):
    """(status, headers, body bytes) from whatever a handler returned, as Flask (and bottle,
    for Kubeless) make a response of a view's return value; a dict with "statusCode" is read
    as a response, as python3-http reads it."""
    headers = {}
    if isinstance(result, dict) and "statusCode" in result:
        headers.update(header_pairs(result.get("headers")))
        return int(result["statusCode"]), headers, encode_body(result.get("body"), headers)
    if isinstance(result, tuple) and 2 <= len(result) <= 3 and isinstance(result[1], int):
        if len(result) == 3:
            headers.update(header_pairs(result[2]))
        return result[1], headers, encode_body(result[0], headers)
    return 200, headers, encode_body(result, headers)


def call_wsgi(app, request, server_port):
    environ = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": request.path,
        "QUERY_STRING": request.raw_query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": request.headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(request.body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for key, value in request.headers.items():
        name = key.upper().replace("-", "_")
        if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[f"HTTP_{name}"] = value
    started = {}

    def start_response(status, response_headers, exc_info=None):
        started["status"] = int(status.split(" ", 1)[0])
        started["headers"] = dict(response_headers)
        return lambda chunk: chunks.append(chunk)

    chunks = []
    iterable = app(environ, start_response)
    try:
        for chunk in iterable:
            chunks.append(chunk)
    finally:
        if hasattr(iterable, "close"):
            iterable.close()
    return started.get("status", 500), started.get("headers", {}), b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# HTTP


class InvocationTimeout(Exception):
    """The handler ran past the function's timeout."""


def invoke(server, request):
    """Calls the function by its convention; returns (status, headers, body bytes)."""
    if server.convention == "wsgi":
        return call_wsgi(server.target, request, server.port_number)
    if server.convention == "req":
        # python3-flask hands over request.get_data(as_text=not RAW_BODY).
        raw = os.environ.get("RAW_BODY", "").lower() in ("true", "1")
        return to_response(server.target(request.body if raw else request.body_text))
    if server.convention == "openfaas-http":
        return to_openfaas_http_response(server.target(Event(request), Context(server.timeout_s)))
    if server.convention == "kubeless":
        return to_response(server.target(Event(request), Context(server.timeout_s)))
    return to_response(server.target())


def call_with_timeout(call, timeout_s):
    """Runs `call` in a worker thread and waits at most `timeout_s` for it. Python cannot stop
    a thread, so a handler that hangs keeps its thread; the caller gets its 504 in time."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the request thread
            outcome["error"] = error

    worker = threading.Thread(target=run, name="kubefn-handler", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise InvocationTimeout()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class FunctionServer(ThreadingHTTPServer):
    daemon_threads = True
    # Plenty of queued connections: bursts arrive while the handler threads are busy.
    request_queue_size = 512

    def __init__(self, address, convention, target, timeout_s):
        super().__init__(address, FunctionHandler)
        self.convention = convention
        self.target = target
        self.timeout_s = timeout_s
        self.in_flight = 0
        self.idle = threading.Condition()

    @property
    def port_number(self):
        return self.server_address[1]

    @property
    def where(self):
        return f"port {self.port_number}"

    def begin_request(self):
        with self.idle:
            self.in_flight += 1

    def end_request(self):
        with self.idle:
            self.in_flight -= 1
            self.idle.notify_all()

    def serve_until(self, stopping):
        """Accepts and serves connections until `stopping` is set (serve_forever polls for
        shutdown() only every half second; this wakes at once)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(stopping.read_end, selectors.EVENT_READ)
            while not stopping.requested:
                ready = selector.select()
                if stopping.requested:
                    return
                if any(key.fileobj is self for key, _ in ready):
                    self._handle_request_noblock()

    def wait_idle(self, timeout_s):
        """Waits until no request is being handled, at most `timeout_s` seconds."""
        with self.idle:
            return self.idle.wait_for(lambda: self.in_flight == 0, timeout=timeout_s)


class UnixFunctionServer(FunctionServer):
    """The same server on a Unix socket file."""

    address_family = socket.AF_UNIX

    def server_bind(self):
        # HTTPServer.server_bind looks up a host name and a port; a socket file has neither.
        try:
            os.unlink(self.server_address)
        except FileNotFoundError:
            pass
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = 80

    @property
    def port_number(self):
        return 80

    @property
    def where(self):
        return f"socket {self.server_address}"


class FunctionHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubefn-python"

    def log_message(self, format, *args):  # noqa: A002 - the gateway records requests; keep stdout for the function
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status, headers, body):
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def address_string(self):
        # A Unix socket's peer has no address (client_address is an empty string).
        return self.client_address[0] if self.client_address else "local"

    def handle_any(self):
        self.server.begin_request()
        try:
            self.serve_request()
        finally:
            self.server.end_request()

    def serve_request(self):
        body = self.read_body()
        server = self.server
        if self.path == HEALTH_PATH or (self.path == READY_PATH and server.convention is not None):
            return self.send(200, {"Content-Type": "text/plain"}, b"ok")
        if self.path == SPECIALIZE_PATH and self.command == "POST":
            return self.specialize(body)
        if server.convention is None:
            return self.send(503, {"Content-Type": "text/plain"}, b"this warm process has no function yet\n")
        request = Request(self.command, self.path, self.headers, body)
        try:
            status, headers, payload = call_with_timeout(lambda: invoke(server, request), server.timeout_s)
        except InvocationTimeout:
            print(f"kubefn: the handler did not answer within {server.timeout_s} s; answered 504", file=sys.stderr, flush=True)
            status, headers, payload = 504, {"Content-Type": "text/plain; charset=utf-8"}, \
                f"the function did not answer within its timeout of {server.timeout_s} s\n".encode()
        except Exception as error:  # noqa: BLE001 - a failing handler must not take the replica down
            print(f"kubefn: the handler raised {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            traceback.print_exception(error, file=sys.stderr)
            sys.stderr.flush()
            status, headers, payload = 500, {"Content-Type": "text/plain; charset=utf-8"}, f"{type(error).__name__}: {error}\n".encode()
        self.send(status, headers, payload)

    def specialize(self, body):
        """Loads the function into this warm process (once): what a cold start would have done
        at launch, minus starting the interpreter."""
        server = self.server
        if server.convention is not None:
            return self.send(409, {"Content-Type": "text/plain"}, b"already specialized\n")
        try:
            job = json.loads(body)
            os.environ.update(job.get("env") or {})
            if job.get("dir"):
                os.chdir(job["dir"])
            if job.get("timeout_s"):
                server.timeout_s = float(job["timeout_s"])
            convention, target = load_function(job["source"], (job.get("handler") or "").strip(), job.get("deps"))
        except (LoadError, ValueError, KeyError, OSError) as error:
            print(f"kubefn: cannot load the function: {error}", file=sys.stderr, flush=True)
            self.send(422, {"Content-Type": "text/plain; charset=utf-8"}, f"{error}\n".encode())
            # Half-loaded code may linger in this interpreter: it must not serve anything else.
            threading.Timer(0.05, os._exit, [LOAD_ERROR_EXIT]).start()
            return None
        server.convention, server.target = convention, target
        log(f"ready on {server.where}")
        return self.send(200, {"Content-Type": "text/plain"}, b"specialized\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


def main():
    port = os.environ.get("PORT")
    socket_path = os.environ.get("KUBEFN_SOCKET")
    source = os.environ.get("KUBEFN_SOURCE")
    warm = os.environ.get("KUBEFN_POOL") == "1"
    if not (port or socket_path) or not (source or warm):
        print("kubefn: PORT (or KUBEFN_SOCKET) and KUBEFN_SOURCE (or KUBEFN_POOL=1) must be set", file=sys.stderr)
        return LOAD_ERROR_EXIT
    try:
        timeout_s = float(os.environ.get("KUBEFN_TIMEOUT") or 60)
    except ValueError:
        print(f"kubefn: KUBEFN_TIMEOUT must be a number of seconds (got {os.environ.get('KUBEFN_TIMEOUT')!r})", file=sys.stderr)
        return LOAD_ERROR_EXIT
    convention, target = None, None
    if source:
        try:
            convention, target = load_function(source, os.environ.get("KUBEFN_HANDLER", "").strip(), os.environ.get("KUBEFN_DEPS"))
        except LoadError as error:
            print(f"kubefn: cannot load the function: {error}", file=sys.stderr, flush=True)
            return LOAD_ERROR_EXIT
    if socket_path:
        server = UnixFunctionServer(socket_path, convention, target, timeout_s)
    else:
        server = FunctionServer((os.environ.get("KUBEFN_BIND", "0.0.0.0"), int(port)), convention, target, timeout_s)
    stopping = StopSignal()
    signal.signal(signal.SIGTERM, stopping.set)
    signal.signal(signal.SIGINT, stopping.set)
    log(f"ready on {server.where}" if source else f"warm on {server.where}, waiting for a function")
    try:
        server.serve_until(stopping)
        # Requests in flight finish; idle keep-alive connections are simply closed.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        server.wait_idle(server.timeout_s)
    finally:
        server.server_close()
        stopping.close()
    return 0


class StopSignal:
    """SIGTERM (or SIGINT) arrived. The signal handler only sets a flag and writes to a pipe
    the accept loop also waits on, so the loop stops at once. Raising from the handler instead
    would land wherever the main thread is: between accepting a connection and starting its
    thread, socketserver then closes a socket that thread is already reading."""

    def __init__(self):
        self.requested = False
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)

    def set(self, signum, frame):  # noqa: ARG002 - signal handler signature
        self.requested = True
        try:
            os.write(self.write_end, b"x")
        except BlockingIOError:
            pass  # already woken

    def close(self):
        os.close(self.read_end)
        os.close(self.write_end)


if __name__ == "__main__":
    threading.current_thread().name = "kubefn-main"
    sys.exit(main())
