//! The webhook credential's settings (`auth`): API keys, bearer tokens, a body signature.

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `none` disables authentication; anything else is configured through the credentials below.
    #[serde(default)]
    pub mode: Option<AuthMode>,
    /// Static API keys in a header, as the callback family sends them
    /// (`callback_args.headers`).
    #[serde(default)]
    pub api_keys: Option<ApiKeySettings>,
    /// Bearer tokens, as agent event subscriptions send them.
    #[serde(default)]
    pub bearer: Option<BearerSettings>,
    /// An HMAC signature over each body (and a timestamp), verified before the body is parsed.
    /// Alone, it authenticates; beside `api_keys`/`bearer`, a request needs both.
    #[serde(default)]
    pub signature: Option<crate::ingest::signature::settings::SignatureSettings>,
}

#[derive(
    Debug, Clone, Copy, Deserialize, schemars::JsonSchema, serde::Serialize, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// The header the customer put in the sender's `callback_args.headers`.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// Every listed key is accepted, so keys can be rotated without downtime.
    #[schemars(with = "Vec<String>")]
    pub keys: Vec<SecretString>,
}

fn default_api_key_header() -> String {
    "X-API-Key".into()
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BearerSettings {
    /// Accepted `Authorization: Bearer <token>` values (agent event subscriptions use these).
    #[schemars(with = "Vec<String>")]
    pub tokens: Vec<SecretString>,
}
