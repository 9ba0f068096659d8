// keyward's gRPC API for TypeScript: the generated messages and service descriptors of
// keyward.v1 (src/gen, made by `npm run generate`) and a helper for its error details.
export * from "./gen/keyward/v1/api_key_pb.js";
export * from "./gen/keyward/v1/api_key_service_pb.js";
export * from "./gen/keyward/v1/audit_service_pb.js";
export * from "./gen/keyward/v1/credit_pb.js";
export * from "./gen/keyward/v1/credit_service_pb.js";
export * from "./gen/keyward/v1/rate_limit_service_pb.js";
export * from "./gen/keyward/v1/rpc_provider_key_pb.js";
export * from "./gen/keyward/v1/rpc_provider_key_service_pb.js";
export * from "./gen/keyward/v1/webhook_service_pb.js";
export { errorDetails, ERROR_DOMAIN, type ErrorDetails } from "./errors.js";
