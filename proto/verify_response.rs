//! `VerifyApiKeyResponse`, written here instead of generated so that a server can answer
//! with a key it encoded once (`encoded_api_key`) rather than building and encoding the
//! `ApiKey` message on every verification, the call keyward exists for. Its wire form is
//! the generated one's: field 3 is a length-delimited `ApiKey` either way, and decoding
//! always fills `api_key`.

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut, Bytes},
    encoding::{self, DecodeContext, WireType},
};

use crate::v1::{ApiKey, CreditAmount, RateLimitState, VerificationCode};

/// Response of VerifyApiKey.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct VerifyApiKeyResponse {
    /// Whether the key is valid for the request.
    pub valid: bool,
    /// Why, in one code (a `VerificationCode`).
    pub code: i32,
    /// The key the secret belongs to, when one was found.
    pub api_key: Option<ApiKey>,
    /// After a charge: the balances of the charged units.
    pub remaining_credits: Vec<CreditAmount>,
    /// Every rate limit the verification applied, for RateLimit-* and Retry-After headers.
    pub rate_limits: Vec<RateLimitState>,
    /// With INSUFFICIENT_SCOPE: the fewest scopes that would have satisfied the request.
    pub missing_scopes: Vec<String>,
    /// After a hold: its id, for CaptureCreditHold and ReleaseCreditHold.
    pub hold_id: String,
    /// The key already encoded (an `ApiKey` message), sent in place of `api_key` when set.
    /// Never set by decoding.
    pub encoded_api_key: Option<Bytes>,
}

impl VerifyApiKeyResponse {
    /// `code` as its enum; an unknown value reads as unspecified.
    pub fn code(&self) -> VerificationCode {
        VerificationCode::try_from(self.code).unwrap_or_default()
    }

    /// Sets `code`.
    pub fn set_code(&mut self, value: VerificationCode) {
        self.code = value.into();
    }
}

impl Message for VerifyApiKeyResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.valid {
            encoding::bool::encode(1, &self.valid, buf);
        }
        if self.code != 0 {
            encoding::int32::encode(2, &self.code, buf);
        }
        if let Some(encoded) = &self.encoded_api_key {
            encoding::bytes::encode(3, encoded, buf);
        } else if let Some(api_key) = &self.api_key {
            encoding::message::encode(3, api_key, buf);
        }
        encoding::message::encode_repeated(4, &self.remaining_credits, buf);
        encoding::message::encode_repeated(5, &self.rate_limits, buf);
        encoding::string::encode_repeated(6, &self.missing_scopes, buf);
        if !self.hold_id.is_empty() {
            encoding::string::encode(7, &self.hold_id, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let (field, merged) = match tag {
            1 => ("valid", encoding::bool::merge(wire_type, &mut self.valid, buf, ctx)),
            2 => ("code", encoding::int32::merge(wire_type, &mut self.code, buf, ctx)),
            3 => ("api_key", encoding::message::merge(wire_type, self.api_key.get_or_insert_default(), buf, ctx)),
            4 => (
                "remaining_credits",
                encoding::message::merge_repeated(wire_type, &mut self.remaining_credits, buf, ctx),
            ),
            5 => ("rate_limits", encoding::message::merge_repeated(wire_type, &mut self.rate_limits, buf, ctx)),
            6 => ("missing_scopes", encoding::string::merge_repeated(wire_type, &mut self.missing_scopes, buf, ctx)),
            7 => ("hold_id", encoding::string::merge(wire_type, &mut self.hold_id, buf, ctx)),
            _ => return encoding::skip_field(wire_type, tag, buf, ctx),
        };
        merged.map_err(|mut error| {
            error.push("VerifyApiKeyResponse", field);
            error
        })
    }

    fn encoded_len(&self) -> usize {
        let valid = if self.valid { encoding::bool::encoded_len(1, &self.valid) } else { 0 };
        let code = if self.code == 0 { 0 } else { encoding::int32::encoded_len(2, &self.code) };
        let api_key = match (&self.encoded_api_key, &self.api_key) {
            (Some(encoded), _) => encoding::bytes::encoded_len(3, encoded),
            (None, Some(api_key)) => encoding::message::encoded_len(3, api_key),
            (None, None) => 0,
        };
        let hold_id = if self.hold_id.is_empty() { 0 } else { encoding::string::encoded_len(7, &self.hold_id) };
        valid
            + code
            + hold_id
            + api_key
            + encoding::message::encoded_len_repeated(4, &self.remaining_credits)
            + encoding::message::encoded_len_repeated(5, &self.rate_limits)
            + encoding::string::encoded_len_repeated(6, &self.missing_scopes)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey {
            id: "0193f0c4-0000-7000-8000-000000000001".into(),
            name: "svc".into(),
            scopes: vec!["read".into()],
            ..ApiKey::default()
        }
    }

    fn answer(api_key: Option<ApiKey>, encoded_api_key: Option<Bytes>) -> VerifyApiKeyResponse {
        VerifyApiKeyResponse {
            valid: true,
            code: VerificationCode::Valid.into(),
            api_key,
            remaining_credits: vec![CreditAmount { unit: "calls".into(), amount: 3 }],
            rate_limits: vec![RateLimitState { name: "hot".into(), limit: 5, remaining: 4, reset_time: None }],
            missing_scopes: vec!["documents.write".into()],
            hold_id: "0193f0c4-0000-7000-8000-000000000002".into(),
            encoded_api_key,
        }
    }

    #[test]
    fn a_key_sent_encoded_is_the_same_bytes_as_the_key_sent_as_a_message_and_decodes_to_it() {
        let as_message = answer(Some(key()), None).encode_to_vec();
        let as_bytes = answer(None, Some(key().encode_to_vec().into())).encode_to_vec();
        assert_eq!(as_bytes, as_message);
        assert_eq!(answer(None, Some(key().encode_to_vec().into())).encoded_len(), as_message.len());
        let decoded = VerifyApiKeyResponse::decode(as_bytes.as_slice()).unwrap();
        assert_eq!(decoded, answer(Some(key()), None));
        assert_eq!(decoded.code(), VerificationCode::Valid);
    }

    #[test]
    fn an_empty_answer_is_empty_on_the_wire_and_unknown_fields_are_skipped() {
        assert!(VerifyApiKeyResponse::default().encode_to_vec().is_empty());
        // Field 9 (varint 1) is unknown; field 1 still decodes.
        let decoded = VerifyApiKeyResponse::decode([0x48, 0x01, 0x08, 0x01].as_slice()).unwrap();
        assert!(decoded.valid);
        assert!(VerifyApiKeyResponse::decode([0x1a, 0x05, 0x0a].as_slice()).is_err());
    }
}
