// Runs against the server at $KEYWARD_TEST_GRPC_ADDR with the admin key in
// $KEYWARD_TEST_ADMIN_KEY (tests/clients.sh starts one and sets both).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ApiKeyService, ApiKeyStatus, ERROR_DOMAIN, errorDetails, VerificationCode } from "../src/index.js";

const addr = process.env.KEYWARD_TEST_GRPC_ADDR;
const admin = process.env.KEYWARD_TEST_ADMIN_KEY;

test("create, verify, revoke and error details against a keyward server", { skip: !addr || !admin }, async () => {
  const keys = createClient(ApiKeyService, createGrpcTransport({ baseUrl: `http://${addr}` }));
  const headers = { authorization: `Bearer ${admin}` };

  const created = await keys.createApiKey({ apiKey: { name: "ts client", scopes: ["app:read"] } }, { headers });
  assert.ok(created.secret && created.apiKey?.id, "CreateApiKey returns a secret and an id");

  const verify = () => keys.verifyApiKey({ key: created.secret, requiredScopes: ["app:read"] }, { headers });
  const valid = await verify();
  assert.equal(valid.code, VerificationCode.VALID);
  assert.equal(valid.valid, true);

  const deleted = await keys.deleteApiKey({ id: created.apiKey.id }, { headers });
  assert.equal(deleted.apiKey?.status, ApiKeyStatus.REVOKED);
  const revoked = await verify();
  assert.equal(revoked.code, VerificationCode.REVOKED);
  assert.equal(revoked.valid, false);

  const blank = await keys.createApiKey({ apiKey: { name: "" } }, { headers }).then(
    () => assert.fail("a blank name was accepted"),
    errorDetails,
  );
  assert.equal(blank.code, Code.InvalidArgument);
  assert.equal(blank.info?.domain, ERROR_DOMAIN);
  assert.ok(blank.fieldViolations.has("api_key.name"), `BadRequest names ${[...blank.fieldViolations.keys()]}`);

  const missing = await keys.getApiKey({ id: "0f9e3a52-2c55-4c1e-9a4f-7d2b1c0e5a61" }, { headers }).then(
    () => assert.fail("an unknown id was found"),
    errorDetails,
  );
  assert.equal(missing.code, Code.NotFound);
  assert.equal(missing.info?.reason, "API_KEY_NOT_FOUND");
});
