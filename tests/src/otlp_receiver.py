"""A small OTLP receiver for netladder's tests.

Usage: otlp_receiver.py GRPC_PORT HTTP_PORT OUT_FILE

Listens on 127.0.0.1: OTLP over gRPC (the logs and metrics services) on GRPC_PORT, and OTLP/HTTP
with protobuf bodies (POST /v1/logs, /v1/metrics) on HTTP_PORT. Every request it receives is
appended to OUT_FILE as one JSON line: {"transport", "signal", "request"}, the request decoded
with the protobuf JSON mapping (field names as in the .proto files). Prints "ready" once both
listen; runs until it is killed.
"""

import http.server
import json
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

LOCK = threading.Lock()


def record(out, transport, signal, message):
    line = json.dumps(
        {
            "transport": transport,
            "signal": signal,
            "request": json_format.MessageToDict(message, preserving_proto_field_name=True),
        }
    )
    with LOCK:
        with open(out, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out):
        self.out = out

    def Export(self, request, context):
        record(self.out, "grpc", "logs", request)
        return logs_service_pb2.ExportLogsServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, out):
        self.out = out

    def Export(self, request, context):
        record(self.out, "grpc", "metrics", request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def http_handler(out):
    kinds = {
        "/v1/logs": ("logs", logs_service_pb2.ExportLogsServiceRequest,
                     logs_service_pb2.ExportLogsServiceResponse),
        "/v1/metrics": ("metrics", metrics_service_pb2.ExportMetricsServiceRequest,
                        metrics_service_pb2.ExportMetricsServiceResponse),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            kind = kinds.get(self.path)
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if kind is None or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            signal, request_type, response_type = kind
            message = request_type()
            message.ParseFromString(body)
            record(out, "http", signal, message)
            answer = response_type().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    return Handler


def main():
    grpc_port, http_port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(out), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(out), server)
    if server.add_insecure_port(f"127.0.0.1:{grpc_port}") != grpc_port:
        print(f"error: cannot listen on 127.0.0.1:{grpc_port}", flush=True)
        sys.exit(1)
    server.start()
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    web = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), http_handler(out))
    threading.Thread(target=web.serve_forever, daemon=True).start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
