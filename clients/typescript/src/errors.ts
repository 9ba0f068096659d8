import { Code, ConnectError } from "@connectrpc/connect";
import {
  type BadRequest,
  BadRequestSchema,
  type ErrorInfo,
  ErrorInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** The ErrorInfo domain of every keyward error. */
export const ERROR_DOMAIN = "keyward.v1";

/**
 * The details of a keyward error. Every error carries an ErrorInfo (a `reason` such as
 * `API_KEY_NOT_FOUND`, `metadata` such as the id); INVALID_ARGUMENT also a BadRequest naming
 * each refused field and how to fix it.
 */
export interface ErrorDetails {
  code: Code;
  message: string;
  /** Undefined when the error did not come from keyward (a transport error, say). */
  info?: ErrorInfo;
  /** Undefined unless the error is INVALID_ARGUMENT. */
  badRequest?: BadRequest;
  /** Each refused field (for example `api_key.name`) with why it was refused. */
  fieldViolations: Map<string, string>;
}

/**
 * Decodes the google.rpc.Status keyward sends in the `grpc-status-details-bin` trailer of a
 * failed call. Connect's gRPC transport has already parsed the trailer into the error's
 * details; this unpacks the two detail types keyward sends, with the vendored google/rpc types.
 */
export function errorDetails(err: unknown): ErrorDetails {
  const error = ConnectError.from(err);
  const badRequest = error.findDetails(BadRequestSchema)[0];
  return {
    code: error.code,
    message: error.rawMessage,
    info: error.findDetails(ErrorInfoSchema)[0],
    badRequest,
    fieldViolations: new Map((badRequest?.fieldViolations ?? []).map((v) => [v.field, v.description])),
  };
}
