//! API tokens as the runtime keeps them (the secret itself is never kept).

use super::{Capabilities, Role, Scopes, TokenId, UserId, UserName, default_scopes};
use std::time::SystemTime;

/// A stored API token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// The token's id.
    pub id: TokenId,
    /// Whose it is.
    pub user_id: UserId,
    /// The user's name. Schema 1 stored only the bootstrap admin's token.
    #[serde(default = "UserName::admin")]
    pub user: UserName,
    /// What it may do.
    pub role: Role,
    /// Its scopes; tokens stored before scopes existed hold the default ones.
    #[serde(default = "default_scopes")]
    pub scopes: Scopes,
    /// Its capabilities; tokens stored before capabilities existed hold all of them.
    #[serde(default = "Capabilities::all")]
    pub capabilities: Capabilities,
    /// When it was minted (unknown for tokens stored before this was recorded).
    #[serde(default)]
    pub created: Option<SystemTime>,
    /// The admin token the runtime itself set up (from `EMBER_ADMIN_TOKEN` or
    /// `<data-dir>/admin.token`): it comes back at every start, so the API does not
    /// revoke it.
    #[serde(default)]
    pub bootstrap: bool,
}

/// What a new token is for, as the admin asked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewToken {
    /// The user it authenticates; made on first use of the name.
    pub user: UserName,
    /// Its role.
    pub role: Role,
    /// Its scopes.
    pub scopes: Scopes,
    /// Its capabilities.
    pub capabilities: Capabilities,
}
