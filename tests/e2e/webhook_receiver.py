"""A webhook receiver for the end-to-end tests: every POST is checked with the Standard
Webhooks reference library (PyPI `standardwebhooks`), which keyward's code did not write.

    python webhook_receiver.py PORT SECRET_FILE

Listens on 127.0.0.1:PORT (0 picks one) and prints `listening <port>` once it does. Each
delivery whose signature verifies under the secret in SECRET_FILE (read per request) is
answered 204 and printed as one JSON line {"id", "timestamp", "payload"}; one that does
not verify is answered 400 and printed as {"invalid": reason}.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PORT = int(sys.argv[1])
SECRET_FILE = sys.argv[2]


def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name: value for name, value in self.headers.items()}
        try:
            with open(SECRET_FILE, encoding="utf-8") as file:
                secret = file.read().strip()
            payload = Webhook(secret).verify(body, headers)
        except (OSError, WebhookVerificationError) as err:
            emit({"invalid": str(err)})
            self.send_response(400)
            self.end_headers()
            return
        emit({"id": headers.get("webhook-id") or headers.get("Webhook-Id"),
              "timestamp": headers.get("webhook-timestamp") or headers.get("Webhook-Timestamp"),
              "payload": payload})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Receiver)
emit({"listening": server.server_address[1]})
server.serve_forever()
