"""Smoke test of the keyward package against a real server.

Runs against the server at $KEYWARD_TEST_GRPC_ADDR with the admin key in
$KEYWARD_TEST_ADMIN_KEY (tests/clients.sh starts one and sets both):
    python -m unittest discover -s clients/python/tests -v
"""

import os
import unittest

import grpc

from keyward import ERROR_DOMAIN, error_details
from keyward.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc

ADDR = os.environ.get("KEYWARD_TEST_GRPC_ADDR")
ADMIN_KEY = os.environ.get("KEYWARD_TEST_ADMIN_KEY")


@unittest.skipUnless(ADDR and ADMIN_KEY, "KEYWARD_TEST_GRPC_ADDR and KEYWARD_TEST_ADMIN_KEY are not set")
class SmokeTest(unittest.TestCase):
    def setUp(self):
        self.channel = grpc.insecure_channel(ADDR)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.keys = api_key_service_pb2_grpc.ApiKeyServiceStub(self.channel)
        self.auth = [("authorization", f"Bearer {ADMIN_KEY}")]

    def tearDown(self):
        self.channel.close()

    def call_error(self, method, request, **kwargs):
        with self.assertRaises(grpc.RpcError) as raised:
            method(request, timeout=10, **kwargs)
        return error_details(raised.exception)

    def test_create_verify_revoke(self):
        created = self.keys.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(
            api_key=api_key_pb2.ApiKey(name="python client", scopes=["app:read"])), metadata=self.auth, timeout=10)
        self.assertTrue(created.secret and created.api_key.id, "CreateApiKey returns a secret and an id")

        def verify(scopes):
            return self.keys.VerifyApiKey(api_key_service_pb2.VerifyApiKeyRequest(
                key=created.secret, required_scopes=scopes), metadata=self.auth, timeout=10)

        valid = verify(["app:read"])
        self.assertEqual((valid.valid, valid.code), (True, api_key_pb2.VERIFICATION_CODE_VALID))
        short = verify(["app:write"])
        self.assertEqual((short.valid, short.code), (False, api_key_pb2.VERIFICATION_CODE_INSUFFICIENT_SCOPE))

        deleted = self.keys.DeleteApiKey(api_key_service_pb2.DeleteApiKeyRequest(id=created.api_key.id),
                                         metadata=self.auth, timeout=10)
        self.assertEqual(deleted.api_key.status, api_key_pb2.API_KEY_STATUS_REVOKED)
        revoked = verify(["app:read"])
        self.assertEqual((revoked.valid, revoked.code), (False, api_key_pb2.VERIFICATION_CODE_REVOKED))

    def test_invalid_argument_names_the_field(self):
        blank = self.call_error(self.keys.CreateApiKey, api_key_service_pb2.CreateApiKeyRequest(
            api_key=api_key_pb2.ApiKey(name="")), metadata=self.auth)
        self.assertEqual(blank.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(blank.info.domain, ERROR_DOMAIN)
        self.assertIn("api_key.name", blank.field_violations)

    def test_error_info_reason(self):
        missing = self.call_error(self.keys.GetApiKey, api_key_service_pb2.GetApiKeyRequest(
            id="0f9e3a52-2c55-4c1e-9a4f-7d2b1c0e5a61"), metadata=self.auth)
        self.assertEqual((missing.code, missing.reason), (grpc.StatusCode.NOT_FOUND, "API_KEY_NOT_FOUND"))
        self.assertEqual(missing.info.metadata["id"], "0f9e3a52-2c55-4c1e-9a4f-7d2b1c0e5a61")

    def test_no_credentials_is_unauthenticated(self):
        anonymous = self.call_error(self.keys.GetCallerApiKey, api_key_service_pb2.GetCallerApiKeyRequest())
        self.assertEqual((anonymous.code, anonymous.reason), (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"))


if __name__ == "__main__":
    unittest.main()
