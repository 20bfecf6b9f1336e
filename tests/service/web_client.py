"""A plain HTTP client for the service's page, as a script or another site would talk to
it: every header under the test's control (Host, Origin, Cookie, Authorization)."""

import http.client
import json

from running_service import DEADLINE


class Page:
    def __init__(self, port, host_header=None, timeout=DEADLINE):
        self.port, self.timeout = port, timeout
        self.host_header = host_header or f"127.0.0.1:{port}"

    def request(self, method, path, body=None, headers=None, raw=None):
        """(status, headers dict with lower-case names, body bytes)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            sent = {"Host": self.host_header, **(headers or {})}
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            if data is not None and "Content-Length" not in sent:
                sent["Content-Length"] = str(len(data))
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.endheaders()
            if data:
                connection.send(data)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def get(self, path, **headers):
        return self.request("GET", path, headers=headers)

    def get_json(self, path, **headers):
        status, _, body = self.get(path, **headers)
        assert status == 200, (status, body)
        return json.loads(body)

    def post(self, path, body=None, origin="same", **headers):
        """A POST as the page sends it (Origin = its own address), unless ``origin`` says
        another (None: no Origin header at all, as curl)."""
        if origin == "same":
            origin = f"http://{self.host_header}"
        if origin is not None:
            headers["Origin"] = origin
        headers.setdefault("Content-Type", "application/json")
        return self.request("POST", path, body if body is not None else {}, headers)
