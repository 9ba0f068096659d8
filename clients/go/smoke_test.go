package keyward_test

import (
	"context"
	"os"
	"testing"
	"time"

	keyward "github.com/keyward/keyward/clients/go"
	keywardv1 "github.com/keyward/keyward/clients/go/keyward/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// TestSmoke runs against the server at $KEYWARD_TEST_GRPC_ADDR with the admin key in
// $KEYWARD_TEST_ADMIN_KEY (tests/clients.sh starts one and sets both).
func TestSmoke(t *testing.T) {
	addr, admin := os.Getenv("KEYWARD_TEST_GRPC_ADDR"), os.Getenv("KEYWARD_TEST_ADMIN_KEY")
	if addr == "" || admin == "" {
		t.Skip("KEYWARD_TEST_GRPC_ADDR and KEYWARD_TEST_ADMIN_KEY are not set (tests/clients.sh sets them)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	keys := keywardv1.NewApiKeyServiceClient(conn)
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+admin)

	created, err := keys.CreateApiKey(ctx, &keywardv1.CreateApiKeyRequest{
		ApiKey: &keywardv1.ApiKey{Name: "go client", Scopes: []string{"app:read"}},
	})
	if err != nil {
		t.Fatalf("CreateApiKey: %v", err)
	}
	if created.GetSecret() == "" || created.GetApiKey().GetId() == "" {
		t.Fatalf("CreateApiKey returned no secret or id: %v", created)
	}

	verify := func(want keywardv1.VerificationCode) {
		t.Helper()
		got, err := keys.VerifyApiKey(ctx, &keywardv1.VerifyApiKeyRequest{Key: created.GetSecret(), RequiredScopes: []string{"app:read"}})
		if err != nil {
			t.Fatalf("VerifyApiKey: %v", err)
		}
		if got.GetCode() != want || got.GetValid() != (want == keywardv1.VerificationCode_VERIFICATION_CODE_VALID) {
			t.Fatalf("VerifyApiKey: got valid=%v %v, want %v", got.GetValid(), got.GetCode(), want)
		}
	}
	verify(keywardv1.VerificationCode_VERIFICATION_CODE_VALID)

	deleted, err := keys.DeleteApiKey(ctx, &keywardv1.DeleteApiKeyRequest{Id: created.GetApiKey().GetId()})
	if err != nil {
		t.Fatalf("DeleteApiKey: %v", err)
	}
	if got := deleted.GetApiKey().GetStatus(); got != keywardv1.ApiKeyStatus_API_KEY_STATUS_REVOKED {
		t.Fatalf("DeleteApiKey: status %v, want API_KEY_STATUS_REVOKED", got)
	}
	verify(keywardv1.VerificationCode_VERIFICATION_CODE_REVOKED)

	_, err = keys.CreateApiKey(ctx, &keywardv1.CreateApiKeyRequest{ApiKey: &keywardv1.ApiKey{Name: ""}})
	bad := keyward.Details(err)
	if bad.Code != codes.InvalidArgument || bad.Info.GetDomain() != keyward.ErrorDomain {
		t.Fatalf("a blank name: got %v %v, want INVALID_ARGUMENT with an ErrorInfo of %s", bad.Code, bad.Info, keyward.ErrorDomain)
	}
	if _, ok := bad.FieldViolations()["api_key.name"]; !ok {
		t.Fatalf("a blank name: BadRequest names %v, want api_key.name", bad.FieldViolations())
	}

	_, err = keys.GetApiKey(ctx, &keywardv1.GetApiKeyRequest{Id: "0f9e3a52-2c55-4c1e-9a4f-7d2b1c0e5a61"})
	missing := keyward.Details(err)
	if missing.Code != codes.NotFound || missing.Reason() != "API_KEY_NOT_FOUND" {
		t.Fatalf("an unknown id: got %v reason %q, want NOT_FOUND reason API_KEY_NOT_FOUND", missing.Code, missing.Reason())
	}
}
