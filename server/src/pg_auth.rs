//! Postgres authentication: the startup handler. It runs SCRAM-SHA-256
//! (RFC 5802 / 7677, as Postgres does) against the roles' verifiers when
//! any role can log in with a password, and trusts every client otherwise
//! (the embedded default; the server then listens on loopback only unless
//! told otherwise, see `main.rs`).
//!
//! A login as a role that does not exist, has no password or may not log in
//! runs the same exchange against a mock verifier and fails the same way
//! (28P01), so the answer does not tell which names exist. Channel binding
//! (`SCRAM-SHA-256-PLUS`) is not offered; clients that support it say so
//! with the `y` flag and carry on without it.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::{ClientInfo, PgWireConnectionState, PidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use thyme_error::ErrorKind;
use thyme_planner::Engine;
use thyme_table::roles::{Principal, Verifier};

use crate::errors::ClientError;
use crate::pg::Cancels;

const SCRAM: &str = "SCRAM-SHA-256";

/// Authentication settings of the Postgres listener.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthConfig {
    /// Refuse connections that did not start TLS.
    pub require_tls: bool,
}

enum State {
    Start,
    /// `AuthenticationSASL` sent; waiting for the client-first message.
    First {
        user: String,
    },
    /// `server-first` sent; waiting for the client-final message.
    Final(Box<Exchange>),
    Done,
}

struct Exchange {
    user: String,
    verifier: Verifier,
    /// Whether the verifier is a real role's (not a mock).
    real: bool,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// One connection's startup: created per connection.
pub struct Startup {
    pub(crate) engine: Arc<Engine>,
    pub(crate) cancels: Arc<Cancels>,
    pub(crate) keys: Arc<dyn PidSecretKeyGenerator>,
    pub(crate) config: AuthConfig,
    state: Mutex<State>,
}

impl Startup {
    pub(crate) fn new(
        engine: Arc<Engine>,
        cancels: Arc<Cancels>,
        keys: Arc<dyn PidSecretKeyGenerator>,
        config: AuthConfig,
    ) -> Self {
        Startup {
            engine,
            cancels,
            keys,
            config,
            state: Mutex::new(State::Start),
        }
    }

    fn set(&self, s: State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    fn take(&self) -> State {
        std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            State::Done,
        )
    }
}

fn fatal(kind: ErrorKind, message: impl Into<String>) -> PgWireError {
    ClientError::new(kind, message).into_pgwire_fatal()
}

fn bad_message(what: &str) -> PgWireError {
    fatal(
        ErrorKind::ProtocolViolation,
        format!("malformed SCRAM message: {what}"),
    )
}

fn failed(user: &str) -> PgWireError {
    fatal(
        ErrorKind::InvalidPassword,
        format!("password authentication failed for user \"{user}\""),
    )
}

/// Split a client-first message into its GS2 header and its bare part,
/// and take the client nonce.
fn parse_client_first(msg: &str) -> Result<(String, String, String), PgWireError> {
    let mut parts = msg.splitn(3, ',');
    let flag = parts.next().ok_or_else(|| bad_message("no GS2 header"))?;
    let authzid = parts.next().ok_or_else(|| bad_message("no GS2 header"))?;
    let bare = parts
        .next()
        .ok_or_else(|| bad_message("no client-first-bare"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => {
            return Err(fatal(
                ErrorKind::InvalidAuthorization,
                "channel binding (SCRAM-SHA-256-PLUS) was not offered",
            ))
        }
        _ => return Err(bad_message("bad GS2 flag")),
    }
    if !authzid.is_empty() && !authzid.starts_with("a=") {
        return Err(bad_message("bad authorization identity"));
    }
    let nonce = bare
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic() && c != ','))
        .ok_or_else(|| bad_message("no client nonce"))?;
    if bare.starts_with("m=") {
        return Err(bad_message("unsupported mandatory extension"));
    }
    Ok((
        format!("{flag},{authzid},"),
        bare.to_string(),
        nonce.to_string(),
    ))
}

impl Startup {
    /// Authentication is over: open the session as `principal`, then
    /// `AuthenticationOk`, parameters, keys, `ReadyForQuery`.
    async fn finish<C>(&self, client: &mut C, principal: Principal) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret) = self.keys.generate(client);
        client.set_pid_and_secret_key(pid, secret);
        crate::pg::open_session(client, &self.engine, &self.cancels, principal);
        finish_authentication(client, &DefaultServerParameterProvider::default()).await
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match (self.take(), message) {
            (State::Start, PgWireFrontendMessage::Startup(startup)) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                let user = startup
                    .parameters
                    .get("user")
                    .cloned()
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| {
                        fatal(
                            ErrorKind::InvalidAuthorization,
                            "no PostgreSQL user name specified in startup packet",
                        )
                    })?;
                if self.config.require_tls && !client.is_secure() {
                    return Err(fatal(
                        ErrorKind::InvalidAuthorization,
                        "this server requires TLS: connect with sslmode=require",
                    ));
                }
                if !self.engine.roles().auth_required() {
                    return self.finish(client, Principal::trusted(user)).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        vec![SCRAM.to_string()],
                    )))
                    .await?;
                self.set(State::First { user });
                Ok(())
            }
            (State::First { user }, PgWireFrontendMessage::PasswordMessageFamily(msg)) => {
                let initial = msg.into_sasl_initial_response()?;
                if initial.auth_method != SCRAM {
                    return Err(fatal(
                        ErrorKind::InvalidAuthorization,
                        format!(
                            "SASL mechanism {} is not supported (use {SCRAM})",
                            initial.auth_method
                        ),
                    ));
                }
                let data = initial
                    .data
                    .ok_or_else(|| bad_message("empty client-first"))?;
                let text = std::str::from_utf8(&data).map_err(|_| bad_message("not UTF-8"))?;
                let (gs2_header, client_first_bare, client_nonce) = parse_client_first(text)?;
                let (verifier, real) = self.engine.roles().login_verifier(&user);
                let mut server_nonce = [0u8; 18];
                rand::fill(&mut server_nonce);
                let nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
                let server_first = format!(
                    "r={nonce},s={},i={}",
                    STANDARD.encode(&verifier.salt),
                    verifier.iterations
                );
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLContinue(server_first.clone().into()),
                    ))
                    .await?;
                self.set(State::Final(Box::new(Exchange {
                    user,
                    verifier,
                    real,
                    gs2_header,
                    client_first_bare,
                    server_first,
                    nonce,
                })));
                Ok(())
            }
            (State::Final(x), PgWireFrontendMessage::PasswordMessageFamily(msg)) => {
                let resp = msg.into_sasl_response()?;
                let text = std::str::from_utf8(&resp.data).map_err(|_| bad_message("not UTF-8"))?;
                let (without_proof, proof) = text
                    .rsplit_once(",p=")
                    .ok_or_else(|| bad_message("no proof"))?;
                let mut attrs = without_proof.split(',');
                let binding = attrs
                    .next()
                    .and_then(|c| c.strip_prefix("c="))
                    .and_then(|c| STANDARD.decode(c).ok())
                    .ok_or_else(|| bad_message("no channel binding attribute"))?;
                if binding != x.gs2_header.as_bytes() {
                    return Err(bad_message("channel binding does not match"));
                }
                let nonce = attrs
                    .next()
                    .and_then(|r| r.strip_prefix("r="))
                    .ok_or_else(|| bad_message("no nonce"))?;
                if nonce != x.nonce {
                    return Err(bad_message("nonce does not match"));
                }
                let proof = STANDARD
                    .decode(proof)
                    .map_err(|_| bad_message("proof is not base64"))?;
                let auth_message =
                    format!("{},{},{without_proof}", x.client_first_bare, x.server_first);
                match x.verifier.check_proof(auth_message.as_bytes(), &proof) {
                    Some(signature) if x.real => {
                        let last = format!("v={}", STANDARD.encode(signature));
                        client
                            .feed(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(last.into()),
                            ))
                            .await?;
                        self.finish(client, Principal::role(x.user)).await
                    }
                    _ => {
                        tracing::info!(user = %x.user, addr = %client.socket_addr(), "password authentication failed");
                        Err(failed(&x.user))
                    }
                }
            }
            (_, PgWireFrontendMessage::Startup(_)) => Err(fatal(
                ErrorKind::ProtocolViolation,
                "unexpected startup message",
            )),
            (_, _) => Err(fatal(
                ErrorKind::ProtocolViolation,
                "unexpected message during authentication",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_first_parts() {
        let (h, bare, nonce) = parse_client_first("n,,n=,r=abc").unwrap();
        assert_eq!(h, "n,,");
        assert_eq!(bare, "n=,r=abc");
        assert_eq!(nonce, "abc");
        assert!(parse_client_first("p=tls-server-end-point,,n=,r=x").is_err());
        assert!(parse_client_first("n,,n=").is_err());
        assert!(parse_client_first("q,,n=,r=x").is_err());
        assert!(parse_client_first("").is_err());
    }
}
