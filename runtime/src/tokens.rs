//! Token management, for admins: minting tokens for users, listing and revoking them.

use crate::auth;
use crate::error::RuntimeError;
use crate::model::{Caller, NewToken, Page, PageRequest, Token, TokenId};
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
        auth::mint(self.store(), request).await
    }

    /// A page of the tokens, oldest first.
    pub async fn list_tokens(
        &self,
        caller: &Caller,
        page: PageRequest,
    ) -> Result<Page<Token>, RuntimeError> {
        caller.require_admin(MANAGING_TOKENS)?;
        self.store().tokens(page).await
    }

    /// One token.
    pub async fn get_token(&self, caller: &Caller, id: TokenId) -> Result<Token, RuntimeError> {
        caller.require_admin(MANAGING_TOKENS)?;
        self.store()
            .token_by_id(id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Revokes a token: it authenticates nothing from now on. The bootstrap admin
    /// token is refused, since the runtime would set it up again at its next start.
    pub async fn revoke_token(&self, caller: &Caller, id: TokenId) -> Result<Token, RuntimeError> {
        let token = self.get_token(caller, id).await?;
        if token.bootstrap {
            return Err(RuntimeError::Conflict {
                code: "bootstrap_token",
                message: format!(
                    "token {id} is the runtime's bootstrap admin token (EMBER_ADMIN_TOKEN or <data-dir>/admin.token); change it there and restart"
                ),
            });
        }
        let removed = self
            .store()
            .remove_token(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        Ok(removed)
    }
}

fn not_found(id: TokenId) -> RuntimeError {
    RuntimeError::NotFound {
        what: "token",
        id: id.to_string(),
    }
}
