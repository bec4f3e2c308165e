//! API tokens: minted at random, stored only as a hash, looked up by that hash, and
//! revoked by removing that record.

use crate::error::RuntimeError;
use crate::model::{
    Caller, Capabilities, NewToken, Role, Scopes, Token, TokenId, UserId, UserName,
};
use crate::store::Store;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Name of the file under the data dir that holds a generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A new random secret: 32 bytes from the OS, hex-encoded, with a recognisable prefix.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    format!("ember_{}", hex::encode(bytes))
}

/// The SHA-256 of a secret: all that is kept of one.
pub(crate) type SecretHash = [u8; 32];

pub(crate) fn hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Who a bearer secret belongs to, if anyone. Lookup is by the secret's SHA-256, so
/// the time a lookup takes depends on the hash, never on how much of a stored secret
/// a guess matched.
pub async fn authenticate(store: &Store, secret: &str) -> Result<Option<Caller>, RuntimeError> {
    authenticate_as(store, None, secret).await
}

/// As [`authenticate`], for a secret presented with its user's name (Tutum's
/// `ApiKey <user>:<key>`): a token of another user is no one's.
pub async fn authenticate_as(
    store: &Store,
    user: Option<&str>,
    secret: &str,
) -> Result<Option<Caller>, RuntimeError> {
    let token = store.token(hash(secret).to_vec()).await?;
    Ok(token
        .filter(|t| user.is_none_or(|u| t.user.as_str() == u))
        .map(|t| Caller {
            user_id: t.user_id,
            role: t.role,
            scopes: t.scopes,
            capabilities: t.capabilities,
        }))
}

/// Mints a token for `request.user` (made on first use of the name); returns the
/// stored token and its secret, which is shown this once and never kept.
pub async fn mint(store: &Store, request: NewToken) -> Result<(Token, String), RuntimeError> {
    let user_id = if request.user == UserName::admin() {
        store.admin_user_id()
    } else {
        store
            .user_id(request.user.clone(), Box::new(UserId::generate))
            .await?
    };
    let secret = generate_secret();
    let token = new_token(user_id, request, false);
    store
        .insert_token(hash(&secret).to_vec(), token.clone())
        .await?;
    Ok((token, secret))
}

/// A token minted now for `user_id`, as `request` asks.
fn new_token(user_id: UserId, request: NewToken, bootstrap: bool) -> Token {
    Token {
        id: TokenId::generate(),
        user_id,
        user: request.user,
        role: request.role,
        scopes: request.scopes,
        capabilities: request.capabilities,
        created: Some(std::time::SystemTime::now()),
        bootstrap,
    }
}

/// Stores the bootstrap admin token unless it is already stored, so a restart keeps
/// its id.
async fn register(store: &Store, secret: &str, user_id: UserId) -> Result<(), RuntimeError> {
    let hash = hash(secret).to_vec();
    match store.token(hash.clone()).await? {
        Some(token) if token.bootstrap => Ok(()),
        // Stored before tokens recorded this.
        Some(token) => {
            store
                .insert_token(
                    hash,
                    Token {
                        bootstrap: true,
                        ..token
                    },
                )
                .await
        }
        None => {
            store
                .insert_token(
                    hash,
                    new_token(
                        user_id,
                        NewToken {
                            user: UserName::admin(),
                            role: Role::Admin,
                            scopes: Scopes::all(),
                            capabilities: Capabilities::all(),
                        },
                        true,
                    ),
                )
                .await
        }
    }
}

/// Makes sure an admin token exists. With `from_env` (`EMBER_ADMIN_TOKEN`) that token is
/// the admin's; otherwise a token is generated on first start and written to
/// `<data-dir>/admin.token` with mode 0600. Returns a newly generated secret so the
/// caller can print it once.
pub async fn bootstrap_admin(
    store: &Store,
    data_dir: &Path,
    from_env: Option<&str>,
) -> Result<AdminSecret, RuntimeError> {
    let admin = store.admin_user_id();
    if let Some(secret) = from_env {
        if secret.len() < 16 {
            return Err(RuntimeError::invalid(
                "EMBER_ADMIN_TOKEN",
                "must be at least 16 characters",
            ));
        }
        register(store, secret, admin).await?;
        return Ok(AdminSecret {
            secret: secret.to_string(),
            new: false,
        });
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        let secret = std::fs::read_to_string(&path)
            .map_err(RuntimeError::io(format!("reading {}", path.display())))?;
        register(store, secret.trim(), admin).await?;
        return Ok(AdminSecret {
            secret: secret.trim().to_string(),
            new: false,
        });
    }
    let secret = generate_secret();
    register(store, &secret, admin).await?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(RuntimeError::io(format!("creating {}", path.display())))?;
    writeln!(file, "{secret}")
        .and_then(|()| file.sync_all())
        .map_err(RuntimeError::io(format!("writing {}", path.display())))?;
    Ok(AdminSecret { secret, new: true })
}

/// The bootstrap admin's secret, as this start found or made it.
pub struct AdminSecret {
    /// The secret itself.
    pub secret: String,
    /// Made by this start: shown once, then only in the data dir's file.
    pub new: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn generated_admin_token_is_private_and_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let store: Store =
            std::sync::Arc::new(crate::store::SledStore::open(&dir.path().join("state")).unwrap());
        let made = bootstrap_admin(&store, dir.path(), None).await.unwrap();
        assert!(made.new);
        let secret = made.secret;
        let file = dir.path().join(ADMIN_TOKEN_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let caller = authenticate(&store, &secret).await.unwrap().unwrap();
        assert_eq!(caller.role, Role::Admin);
        assert!(authenticate(&store, "ember_wrong").await.unwrap().is_none());
        // A second start reuses the file, prints nothing, and keeps the token's id.
        let stored = || store.token(hash(&secret).to_vec());
        let id = stored().await.unwrap().unwrap().id;
        let again = bootstrap_admin(&store, dir.path(), None).await.unwrap();
        assert!(!again.new);
        assert_eq!(again.secret, secret);
        assert_eq!(stored().await.unwrap().unwrap().id, id);
    }
}
