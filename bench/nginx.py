"""nginx in its three benchmark roles: the upstream, the key-injecting peer, and the balancer.

Each role is its own nginx instance (own prefix, config and pid), with one worker process, so
its memory can be read on its own and it uses one core as mitmproxy does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.procs import Proc

SMALL_JSON = (
    '{"id":"chatcmpl-bench","object":"chat.completion","model":"bench",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"pong"},'
    '"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}'
)

# Streams both ways, as an SSE-capable nginx deployment must; keeps upstream connections open.
_PROXY_COMMON = """
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      client_max_body_size 0;
"""


def binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def _main_conf(prefix: Path, http_body: str) -> str:
    # `user root` only matters when started as root: the workers then read the work directory.
    return f"""
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/client_body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  {http_body}
}}
"""


def upstream_conf(
    prefix: Path, port: int, plain_port: int, cert: Path, key: Path, sse_port: int, download: Path
) -> str:
    """HTTPS for every provider host name: fixed JSON, a static download, SSE and uploads.
    The same on plain HTTP (plain_port) for the direct column, so its client does no more
    work than a proxy's client does."""
    return _main_conf(
        prefix,
        f"""
  upstream sse {{ server 127.0.0.1:{sse_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl default_server;
    listen 127.0.0.1:{plain_port} default_server;
    server_name _;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location = /v1/chat {{
      default_type application/json;
      return 200 '{SMALL_JSON}';
    }}
    location = /v1/download {{
      default_type application/octet-stream;
      alias {download};
    }}
    location ~ ^/v1/(sse|upload)$ {{
      proxy_pass http://sse;
      {_PROXY_COMMON}
    }}
  }}
""",
    )


def peer_conf(prefix: Path, port: int, upstream_port: int, ca: Path, key: str) -> str:
    """What a user would write instead of keyrelay: route by prefix and set the key header."""
    return _main_conf(
        prefix,
        f"""
  upstream openai {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location /api/openai/ {{
      proxy_pass https://openai/v1/;
      proxy_set_header Host api.openai.com;
      proxy_set_header Authorization "Bearer {key}";
      proxy_ssl_server_name on;
      proxy_ssl_name api.openai.com;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate {ca};
      proxy_ssl_session_reuse on;
      {_PROXY_COMMON}
    }}
  }}
""",
    )


def balancer_conf(prefix: Path, port: int, backends: list[int]) -> str:
    """A real load balancer in front of N keyrelay instances (least connections, kept alive).

    The client's Host goes through (keyrelay answers only the names it serves), and an idle
    upstream connection is dropped after 5 s, before keyrelay's keyrelay_head_timeout (10 s)
    closes it under a request nginx may just be sending."""
    servers = "".join(f"server 127.0.0.1:{p}; " for p in backends)
    return _main_conf(
        prefix,
        f"""
  upstream keyrelay {{ least_conn; {servers}keepalive 128; keepalive_timeout 5s; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://keyrelay;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_read_timeout 1h;
      {_PROXY_COMMON}
    }}
  }}
""",
    )


def start(name: str, workdir: Path, port: int, conf: str) -> Proc:
    exe = binary()
    if exe is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx)")
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    argv = [exe, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    return Proc(name, argv, prefix / "stdout.log", port=port)
