//! Roles, their passwords, their privileges, and HTTP API tokens: who may
//! connect and what each may do. Kept as catalog entries (`role/<name>`,
//! `token/<hash>`) in the store, so they survive restarts with the data.
//!
//! - A password is kept only as a SCRAM-SHA-256 verifier in Postgres' own
//!   format (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`),
//!   never in clear; [`Verifier`] also checks a clear password (HTTP Basic).
//! - Privileges are Postgres' table privileges `SELECT`, `INSERT`, `DELETE`
//!   on a table or on every table (`ALL TABLES IN SCHEMA public`, which here
//!   also covers tables created later), and `CREATE` on the database or
//!   schema: defining datasets (DDL, commits of definitions, which ship
//!   code the server runs). Superusers may do everything, including role
//!   management.
//! - A token is a random secret bound to a role; only its SHA-256 is kept.
//! - While no role can log in with a password, authentication is off
//!   ([`Roles::auth_required`]): the embedded default trusts every client
//!   (the server refuses to listen beyond loopback then, unless told to).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use thyme_storage::{TemporalStore, WriteBatch};

use crate::error::{Error, Result};

const ROLE_PREFIX: &str = "role/";
const TOKEN_PREFIX: &str = "token/";
/// SCRAM iterations for new passwords (Postgres' default).
pub const SCRAM_ITERATIONS: u32 = 4096;
/// The prefix of every API token.
pub const TOKEN_PREFIX_TEXT: &str = "thyme_";

/// A table privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// Read: `SELECT`, `GET /features`, `POST /query`.
    Select,
    /// Write: `INSERT`, `COPY FROM`, `POST /api/v1/log`.
    Insert,
    /// Write: `DELETE`.
    Delete,
}

impl Privilege {
    pub fn sql(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Delete => "DELETE",
        }
    }

    pub const ALL: [Privilege; 3] = [Privilege::Select, Privilege::Insert, Privilege::Delete];
}

/// Every table, present and future (`ALL TABLES IN SCHEMA public`).
pub const ALL_TABLES: &str = "*";

/// The key privileges on `table` are kept under.
pub fn table_key(table: &str) -> String {
    if table == ALL_TABLES {
        table.to_string()
    } else {
        thyme_model::snake_case(table)
    }
}

/// A role as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub superuser: bool,
    #[serde(default)]
    pub login: bool,
    /// The SCRAM-SHA-256 verifier of its password.
    #[serde(default)]
    pub password: Option<String>,
    /// Table privileges by table name ([`ALL_TABLES`] for every table).
    #[serde(default)]
    pub tables: BTreeMap<String, BTreeSet<Privilege>>,
    /// `CREATE` on the database: may define datasets and commit.
    #[serde(default)]
    pub create: bool,
}

impl Role {
    /// Whether the role holds `privilege` on `table` (by its SQL name;
    /// a committed name such as `UserStats` is the same as `user_stats`).
    pub fn allows(&self, privilege: Privilege, table: &str) -> bool {
        let table = table_key(table);
        self.superuser
            || [table.as_str(), ALL_TABLES]
                .iter()
                .any(|t| self.tables.get(*t).is_some_and(|p| p.contains(&privilege)))
    }

    pub fn verifier(&self) -> Option<Verifier> {
        self.password.as_deref().and_then(Verifier::parse)
    }
}

/// An API token as stored (the secret itself is not).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    /// Public id (the token's first characters), to list and revoke it.
    pub id: String,
    pub role: String,
    /// What the token is for, as its creator said.
    #[serde(default)]
    pub name: String,
    /// Creation time, microseconds since the epoch.
    pub created_us: i64,
}

/// A SCRAM-SHA-256 password verifier (RFC 5802 / 7677), as Postgres keeps
/// it: enough to check a client's proof, not enough to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source");
    b
}

/// Constant-time equality.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Verifier {
    /// The verifier of `password` with a new random salt.
    pub fn from_password(password: &str) -> Verifier {
        Self::derive(password, &random_bytes(16), SCRAM_ITERATIONS)
    }

    fn salted(password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        // SASLprep, falling back to the raw bytes as Postgres does.
        let prepared = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_string());
        let mut out = vec![0u8; digest::SHA256_OUTPUT_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(iterations.max(1)).expect("non-zero"),
            salt,
            prepared.as_bytes(),
            &mut out,
        );
        out
    }

    fn derive(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let salted = Self::salted(password, salt, iterations);
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&hmac_sha256(&salted, b"Client Key")),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// A verifier no password matches, stable for a name: the answer to a
    /// login as an unknown role looks like the answer for a known one.
    pub fn mock(name: &str, secret: &[u8]) -> Verifier {
        let salt = hmac_sha256(secret, name.as_bytes())[..16].to_vec();
        Verifier {
            iterations: SCRAM_ITERATIONS,
            salt,
            stored_key: random_bytes(32),
            server_key: random_bytes(32),
        }
    }

    /// Parse Postgres' text form.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let v = Verifier {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: STANDARD.decode(stored).ok()?,
            server_key: STANDARD.decode(server).ok()?,
        };
        (v.stored_key.len() == 32 && v.server_key.len() == 32 && !v.salt.is_empty()).then_some(v)
    }

    /// Whether `password` is the one this verifier was made from.
    pub fn check_password(&self, password: &str) -> bool {
        let v = Self::derive(password, &self.salt, self.iterations);
        same(&v.stored_key, &self.stored_key)
    }

    /// Check a client's SCRAM proof over `auth_message`; on success, the
    /// server signature the client expects back.
    pub fn check_proof(&self, auth_message: &[u8], proof: &[u8]) -> Option<Vec<u8>> {
        let signature = hmac_sha256(&self.stored_key, auth_message);
        if proof.len() != signature.len() {
            return None;
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        same(&sha256(&client_key), &self.stored_key)
            .then(|| hmac_sha256(&self.server_key, auth_message))
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

/// The verifier to keep for a `PASSWORD '...'` clause: a verifier given
/// as such (what `psql`'s `\password` sends) is kept as is; anything else
/// is a clear password.
pub fn verifier_for(password: &str) -> Result<String> {
    if password.starts_with("SCRAM-SHA-256$") {
        return Verifier::parse(password)
            .map(|v| v.to_string())
            .ok_or_else(|| Error::InvalidParameter("malformed SCRAM-SHA-256 verifier".into()));
    }
    if password.starts_with("md5") && password.len() == 35 {
        return Err(Error::Unsupported(
            "MD5 password hashes (set password_encryption = 'scram-sha-256' in the client)".into(),
        ));
    }
    if password.is_empty() {
        return Err(Error::InvalidParameter("empty password".into()));
    }
    Ok(Verifier::from_password(password).to_string())
}

/// Who is asking: a role that logged in, or a client the server trusts
/// because authentication is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The login name (`current_user`).
    pub name: String,
    /// Authentication is off: every privilege.
    pub trusted: bool,
}

impl Principal {
    pub fn trusted(name: impl Into<String>) -> Self {
        Principal {
            name: name.into(),
            trusted: true,
        }
    }

    pub fn role(name: impl Into<String>) -> Self {
        Principal {
            name: name.into(),
            trusted: false,
        }
    }
}

#[derive(Default)]
struct State {
    /// Some role can log in with a password (see [`Roles::auth_required`]).
    auth: bool,
    roles: BTreeMap<String, Arc<Role>>,
    /// By the hex SHA-256 of the token.
    tokens: BTreeMap<String, Token>,
}

/// The roles and tokens, loaded from the store and kept in step with it.
pub struct Roles {
    store: Arc<dyn TemporalStore>,
    state: RwLock<Arc<State>>,
    change: std::sync::Mutex<()>,
    /// Salts mock verifiers (unknown roles), per process.
    mock_secret: Vec<u8>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Roles {
    pub fn load(store: Arc<dyn TemporalStore>) -> Result<Self> {
        let mut state = State::default();
        for (name, bytes) in store.catalog_list()? {
            let decode = |e: serde_json::Error| {
                Error::Internal(format!("catalog entry {name} does not decode: {e}"))
            };
            if let Some(role) = name.strip_prefix(ROLE_PREFIX) {
                let r: Role = serde_json::from_slice(&bytes).map_err(decode)?;
                state.roles.insert(role.to_string(), Arc::new(r));
            } else if let Some(hash) = name.strip_prefix(TOKEN_PREFIX) {
                let t: Token = serde_json::from_slice(&bytes).map_err(decode)?;
                state.tokens.insert(hash.to_string(), t);
            }
        }
        state.auth = Self::any_login(&state.roles);
        Ok(Roles {
            store,
            state: RwLock::new(Arc::new(state)),
            change: std::sync::Mutex::new(()),
            mock_secret: random_bytes(32),
        })
    }

    fn any_login(roles: &BTreeMap<String, Arc<Role>>) -> bool {
        roles.values().any(|r| r.login && r.password.is_some())
    }

    fn snapshot(&self) -> Arc<State> {
        self.state.read().expect("roles lock").clone()
    }

    /// Whether clients must authenticate: some role can log in with a
    /// password.
    pub fn auth_required(&self) -> bool {
        self.state.read().expect("roles lock").auth
    }

    pub fn get(&self, name: &str) -> Option<Arc<Role>> {
        self.snapshot().roles.get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Role>> {
        self.snapshot().roles.values().cloned().collect()
    }

    /// The verifier to run a login of `name` against: the role's, or a
    /// mock one (unknown role, no password, no `LOGIN`), so that the
    /// exchange does not tell which names exist.
    pub fn login_verifier(&self, name: &str) -> (Verifier, bool) {
        match self.get(name) {
            Some(r) if r.login => match r.verifier() {
                Some(v) => (v, true),
                None => (Verifier::mock(name, &self.mock_secret), false),
            },
            _ => (Verifier::mock(name, &self.mock_secret), false),
        }
    }

    /// Check a clear password (HTTP Basic); the role on success.
    pub fn check_password(&self, name: &str, password: &str) -> Option<Arc<Role>> {
        let (v, real) = self.login_verifier(name);
        (v.check_password(password) && real)
            .then(|| self.get(name))
            .flatten()
    }

    /// Whether `who` holds `privilege` on `table` (an error naming both
    /// if not).
    pub fn check(&self, who: &Principal, privilege: Privilege, table: &str) -> Result<()> {
        if who.trusted {
            return Ok(());
        }
        match self.get(&who.name) {
            Some(r) if r.allows(privilege, table) => Ok(()),
            Some(_) => Err(Error::PermissionDenied(format!(
                "{} on table {table} (role \"{}\" lacks the {} privilege)",
                privilege.sql(),
                who.name,
                privilege.sql()
            ))),
            None => Err(Error::UnknownRole(who.name.clone())),
        }
    }

    /// Whether `who` may define datasets (DDL, commits).
    pub fn check_create(&self, who: &Principal, what: &str) -> Result<()> {
        if who.trusted {
            return Ok(());
        }
        match self.get(&who.name) {
            Some(r) if r.superuser || r.create => Ok(()),
            Some(_) => Err(Error::PermissionDenied(format!(
                "{what} (role \"{}\" lacks CREATE on the database)",
                who.name
            ))),
            None => Err(Error::UnknownRole(who.name.clone())),
        }
    }

    /// Whether `who` is a superuser (role management, tokens of others).
    pub fn check_superuser(&self, who: &Principal, what: &str) -> Result<()> {
        if who.trusted || self.get(&who.name).is_some_and(|r| r.superuser) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "{what} (only a superuser may)"
        )))
    }

    fn write(&self, f: impl FnOnce(&mut State, &mut WriteBatch) -> Result<()>) -> Result<()> {
        let _guard = self.change.lock().expect("roles change lock");
        let old = self.snapshot();
        let mut next = State {
            auth: old.auth,
            roles: old.roles.clone(),
            tokens: old.tokens.clone(),
        };
        let mut wb = WriteBatch::new();
        f(&mut next, &mut wb)?;
        next.auth = Self::any_login(&next.roles);
        if !wb.is_empty() {
            self.store.write(wb)?;
        }
        *self.state.write().expect("roles lock") = Arc::new(next);
        Ok(())
    }

    fn put(wb: &mut WriteBatch, role: &Role) -> Result<()> {
        let bytes = serde_json::to_vec(role).map_err(|e| Error::Internal(e.to_string()))?;
        wb.put_catalog(&format!("{ROLE_PREFIX}{}", role.name), &bytes);
        Ok(())
    }

    /// Create a role. `if_not_exists` makes an existing one a no-op.
    pub fn create(&self, role: Role, if_not_exists: bool) -> Result<bool> {
        let mut created = false;
        self.write(|s, wb| {
            if s.roles.contains_key(&role.name) {
                return if if_not_exists {
                    Ok(())
                } else {
                    Err(Error::DuplicateRole(role.name.clone()))
                };
            }
            Self::put(wb, &role)?;
            s.roles.insert(role.name.clone(), Arc::new(role));
            created = true;
            Ok(())
        })?;
        Ok(created)
    }

    /// Change a role with `f`.
    pub fn alter(&self, name: &str, f: impl FnOnce(&mut Role) -> Result<()>) -> Result<()> {
        self.write(|s, wb| {
            let mut role = (**s
                .roles
                .get(name)
                .ok_or_else(|| Error::UnknownRole(name.to_string()))?)
            .clone();
            f(&mut role)?;
            Self::put(wb, &role)?;
            s.roles.insert(name.to_string(), Arc::new(role));
            Ok(())
        })
    }

    /// Drop a role and its tokens.
    pub fn drop_role(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut dropped = false;
        self.write(|s, wb| {
            if s.roles.remove(name).is_none() {
                return if if_exists {
                    Ok(())
                } else {
                    Err(Error::UnknownRole(name.to_string()))
                };
            }
            wb.delete_catalog(&format!("{ROLE_PREFIX}{name}"));
            s.tokens.retain(|hash, t| {
                let keep = t.role != name;
                if !keep {
                    wb.delete_catalog(&format!("{TOKEN_PREFIX}{hash}"));
                }
                keep
            });
            dropped = true;
            Ok(())
        })?;
        Ok(dropped)
    }

    /// A new token for `role`: the secret, shown once, and its record.
    pub fn create_token(&self, role: &str, name: &str) -> Result<(String, Token)> {
        let secret = format!(
            "{TOKEN_PREFIX_TEXT}{}",
            URL_SAFE_NO_PAD.encode(random_bytes(32))
        );
        let token = Token {
            id: secret[..TOKEN_PREFIX_TEXT.len() + 8].to_string(),
            role: role.to_string(),
            name: name.to_string(),
            created_us: chrono::Utc::now().timestamp_micros(),
        };
        let hash = hex(&sha256(secret.as_bytes()));
        let t = token.clone();
        self.write(|s, wb| {
            if !s.roles.contains_key(role) {
                return Err(Error::UnknownRole(role.to_string()));
            }
            let bytes = serde_json::to_vec(&t).map_err(|e| Error::Internal(e.to_string()))?;
            wb.put_catalog(&format!("{TOKEN_PREFIX}{hash}"), &bytes);
            s.tokens.insert(hash, t);
            Ok(())
        })?;
        Ok((secret, token))
    }

    /// The role a token is bound to, if the token is valid.
    pub fn token_role(&self, secret: &str) -> Option<Arc<Role>> {
        let state = self.snapshot();
        let t = state.tokens.get(&hex(&sha256(secret.as_bytes())))?;
        state.roles.get(&t.role).cloned()
    }

    /// Tokens, optionally of one role.
    pub fn tokens(&self, role: Option<&str>) -> Vec<Token> {
        self.snapshot()
            .tokens
            .values()
            .filter(|t| role.is_none_or(|r| t.role == r))
            .cloned()
            .collect()
    }

    /// Revoke a token by id; `owner` limits it to that role's tokens.
    pub fn drop_token(&self, id: &str, owner: Option<&str>) -> Result<bool> {
        let mut dropped = false;
        self.write(|s, wb| {
            s.tokens.retain(|hash, t| {
                let hit = t.id == id && owner.is_none_or(|o| t.role == o);
                if hit {
                    wb.delete_catalog(&format!("{TOKEN_PREFIX}{hash}"));
                    dropped = true;
                }
                !hit
            });
            Ok(())
        })?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example: user "user", password "pencil".
    #[test]
    fn rfc7677_proof_checks() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::derive("pencil", &salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final_without_proof =
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{client_first_bare},{server_first},{client_final_without_proof}");
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let server = v.check_proof(auth.as_bytes(), &proof).expect("proof");
        assert_eq!(
            STANDARD.encode(server),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let mut bad = proof.clone();
        bad[0] ^= 1;
        assert!(v.check_proof(auth.as_bytes(), &bad).is_none());
    }

    #[test]
    fn verifier_text_round_trips_and_checks_passwords() {
        let v = Verifier::from_password("s3cret");
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"));
        let back = Verifier::parse(&text).unwrap();
        assert_eq!(back, v);
        assert!(back.check_password("s3cret"));
        assert!(!back.check_password("s3cre"));
        assert!(Verifier::parse("SCRAM-SHA-256$x:y$z:w").is_none());
        assert!(verifier_for("md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_err());
        assert_eq!(verifier_for(&text).unwrap(), text);
    }

    #[test]
    fn privileges_by_table_and_all_tables() {
        let mut r = Role {
            name: "r".into(),
            ..Role::default()
        };
        r.tables
            .entry("t".into())
            .or_default()
            .insert(Privilege::Select);
        assert!(r.allows(Privilege::Select, "t"));
        assert!(!r.allows(Privilege::Insert, "t"));
        assert!(!r.allows(Privilege::Select, "u"));
        r.tables
            .entry(ALL_TABLES.into())
            .or_default()
            .insert(Privilege::Insert);
        assert!(r.allows(Privilege::Insert, "u"));
        r.superuser = true;
        assert!(r.allows(Privilege::Delete, "anything"));
    }
}
