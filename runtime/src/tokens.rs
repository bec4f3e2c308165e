//! Token management, for admins: minting tokens for users, listing and revoking them.

use crate::auth;
use crate::error::RuntimeError;
use crate::model::{Caller, NewToken, Token, TokenId};
use crate::runtime::Runtime;

const MANAGING_TOKENS: &str = "managing tokens";

impl Runtime {
    /// Mints a token; returns it with its secret, which is shown this once.
    pub async fn create_token(
        &self,
        caller: &Caller,
        request: NewToken,
    ) -> Result<(Token, String), RuntimeError> {
        caller.require_admin(MANAGING_TOKENS)?;
        let minted = auth::mint(&self.inner().store, request)?;
        self.inner().store.flush().await?;
        Ok(minted)
    }

    /// Every token, oldest first.
    pub fn list_tokens(&self, caller: &Caller) -> Result<Vec<Token>, RuntimeError> {
        caller.require_admin(MANAGING_TOKENS)?;
        let mut tokens = self.inner().store.tokens()?;
        tokens.sort_by_key(|t| (t.created, t.id));
        Ok(tokens)
    }

    /// One token.
    pub fn get_token(&self, caller: &Caller, id: TokenId) -> Result<Token, RuntimeError> {
        caller.require_admin(MANAGING_TOKENS)?;
        self.inner()
            .store
            .token_by_id(id)?
            .ok_or_else(|| not_found(id))
    }

    /// Revokes a token: it authenticates nothing from now on. The bootstrap admin
    /// token is refused, since the runtime would set it up again at its next start.
    pub async fn revoke_token(&self, caller: &Caller, id: TokenId) -> Result<Token, RuntimeError> {
        let token = self.get_token(caller, id)?;
        if token.bootstrap {
            return Err(RuntimeError::Conflict {
                code: "bootstrap_token",
                message: format!(
                    "token {id} is the runtime's bootstrap admin token (EMBER_ADMIN_TOKEN or <data-dir>/admin.token); change it there and restart"
                ),
            });
        }
        let removed = self
            .inner()
            .store
            .remove_token(id)?
            .ok_or_else(|| not_found(id))?;
        self.inner().store.flush().await?;
        Ok(removed)
    }
}

fn not_found(id: TokenId) -> RuntimeError {
    RuntimeError::NotFound {
        what: "token",
        id: id.to_string(),
    }
}
