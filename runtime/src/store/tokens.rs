//! Tokens and users in the store: tokens keyed by the hash of their secret, with
//! index entries by age and by id; users by name.

use super::{
    SledStore, TokenStore, add_to_counter, corrupt_index, decode, decode_in, encode, get, index,
    transact,
};
use crate::error::RuntimeError;
use crate::model::{Page, PageRequest, Quota, Token, TokenId, UserId, UserName};

#[async_trait::async_trait]
impl TokenStore for SledStore {
    /// Stores a token under the hash of its secret (replacing the token stored
    /// under it, if any).
    async fn insert_token(&self, secret_hash: Vec<u8>, token: Token) -> Result<(), RuntimeError> {
        self.writer
            .write(move |t| {
                let value = encode(&token)?;
                transact((&t.tokens, &t.index), |(tokens, index)| {
                    let old = tokens.insert(secret_hash.as_slice(), value.as_slice())?;
                    match old {
                        Some(old) => {
                            let old: Token = decode_in(&old)?;
                            for (key, _) in index::token_entries(&old, &secret_hash) {
                                index.remove(key)?;
                            }
                        }
                        None => add_to_counter(index, &index::token_counter(), 1)?,
                    }
                    for (key, value) in index::token_entries(&token, &secret_hash) {
                        index.insert(key, value)?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Looks a token up by the hash of its secret.
    async fn token(&self, secret_hash: Vec<u8>) -> Result<Option<Token>, RuntimeError> {
        self.read(move |t| get(&t.tokens, &secret_hash)).await
    }

    /// A page of the tokens, oldest first.
    async fn tokens(&self, page: PageRequest) -> Result<Page<Token>, RuntimeError> {
        self.read(move |t| {
            let total = index::decode_count(t.index.get(index::token_counter())?.as_deref());
            let items = t
                .index
                .scan_prefix(index::tokens_by_age_prefix())
                .values()
                .skip(page.skip())
                .take(page.rows_per_page as usize)
                .map(|hash| get(&t.tokens, &hash?)?.ok_or_else(corrupt_index))
                .collect::<Result<_, _>>()?;
            Ok(page.page_of(items, usize::try_from(total).unwrap_or(usize::MAX), None))
        })
        .await
    }

    /// The token with `id`.
    async fn token_by_id(&self, id: TokenId) -> Result<Option<Token>, RuntimeError> {
        self.read(move |t| {
            let Some(hash) = t.index.get(index::token_by_id(&id))? else {
                return Ok(None);
            };
            get(&t.tokens, &hash)
        })
        .await
    }

    /// Removes the token with `id`; returns it, or `None` when there was none.
    async fn remove_token(&self, id: TokenId) -> Result<Option<Token>, RuntimeError> {
        self.writer
            .write(move |t| {
                transact((&t.tokens, &t.index), |(tokens, index)| {
                    let Some(hash) = index.get(index::token_by_id(&id))? else {
                        return Ok(None);
                    };
                    let Some(old) = tokens.remove(&hash)? else {
                        return Ok(None);
                    };
                    let token: Token = decode_in(&old)?;
                    for (key, _) in index::token_entries(&token, &hash) {
                        index.remove(key)?;
                    }
                    add_to_counter(index, &index::token_counter(), -1)?;
                    Ok(Some(token))
                })
            })
            .await
    }

    /// The id of the user called `name`, made with `generate` the first time.
    async fn user_id(
        &self,
        name: UserName,
        generate: Box<dyn FnOnce() -> UserId + Send>,
    ) -> Result<UserId, RuntimeError> {
        self.writer
            .write(move |t| {
                let new = generate();
                let previous = t.users.compare_and_swap(
                    name.as_str().as_bytes(),
                    None as Option<&[u8]>,
                    Some(encode(&new)?),
                )?;
                match previous {
                    Ok(()) => Ok(new),
                    Err(existing) => decode(&existing.current.ok_or_else(corrupt_index)?),
                }
            })
            .await
    }

    async fn quota(&self, id: UserId) -> Result<Option<Quota>, RuntimeError> {
        self.read(move |t| get(&t.quotas, id.as_bytes())).await
    }

    async fn set_quota(&self, id: UserId, quota: Quota) -> Result<(), RuntimeError> {
        self.writer
            .write(move |t| {
                t.quotas.insert(id.as_bytes(), encode(&quota)?)?;
                Ok(())
            })
            .await
    }

    fn quotas_blocking(&self) -> Result<Vec<(UserId, Quota)>, RuntimeError> {
        self.slot
            .trees()
            .quotas
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                let bytes: [u8; 16] = key.as_ref().try_into().map_err(|_| corrupt_index())?;
                Ok((UserId::from_bytes(bytes), decode(&value)?))
            })
            .collect()
    }
}
