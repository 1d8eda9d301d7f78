//! The first packet of a connection: reading the CONNECT and deciding whether to accept it
//! (keep-alive range, the Link SDK credentials, the device's signature and state).

use tokio::io::{AsyncRead, AsyncWrite};

use super::auth;
use super::codec::{self, ConnAckCode, ConnectPacket, Inbound, Version};
use super::io::Io;
use super::{IngressContext, RefusalReason};
use crate::logsafe::Untrusted;

pub(super) async fn read_connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    shared: &IngressContext,
) -> Result<(Version, ConnectPacket), String> {
    loop {
        match codec::detect(&io.rbuf) {
            Ok(Some(version)) => loop {
                match version.read(&mut io.rbuf, shared.limits.max_packet) {
                    Ok(Some(Inbound::Connect(c))) => return Ok((version, c)),
                    Ok(Some(_)) => return Err("first packet is not CONNECT".into()),
                    Ok(None) => {
                        if io.read_more().await.map_err(|e| e.to_string())? == 0 {
                            return Err("connection closed inside CONNECT".into());
                        }
                    }
                    Err(e) => return Err(e.to_string()),
                }
            },
            Ok(None) => {
                if io.read_more().await.map_err(|e| e.to_string())? == 0 {
                    return Err("connection closed before CONNECT".into());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Why a CONNECT is refused: the CONNACK code, the counted reason and the logged text.
pub(super) type Refusal = (ConnAckCode, RefusalReason, String);

pub(super) fn authenticate(
    connect: &ConnectPacket,
    shared: &IngressContext,
) -> Result<(auth::Credentials, std::sync::Arc<crate::registry::Device>, u16), Refusal> {
    use RefusalReason as R;
    let limits = &shared.limits;
    if !(limits.keep_alive_min..=limits.keep_alive_max).contains(&connect.keep_alive) {
        return Err((
            ConnAckCode::BadKeepAlive,
            R::KeepAlive,
            format!(
                "keep-alive {} s is outside {}..={} s",
                connect.keep_alive, limits.keep_alive_min, limits.keep_alive_max
            ),
        ));
    }
    let bad = |why: RefusalReason, message: String| (ConnAckCode::BadCredentials, why, message);
    let credentials = auth::parse(&connect.client_id, connect.username.as_deref())
        .map_err(|e| bad(R::BadCredentials, e.to_string()))?;
    let password = connect.password.as_deref().ok_or_else(|| bad(R::BadCredentials, "no password".into()))?;
    let device =
        shared.registry.device(&credentials.product_key, &credentials.device_name).ok_or_else(|| {
            bad(R::UnknownDevice, format!("unknown device {}", Untrusted(&credentials.username())))
        })?;
    if !credentials.verify(&device.secret, password.as_bytes()) {
        let message = format!("bad signature for {}", Untrusted(&credentials.username()));
        return Err((ConnAckCode::BadCredentials, R::BadSignature, message));
    }
    if !device.enabled {
        let message = format!("device {} is disabled", Untrusted(&credentials.username()));
        return Err((ConnAckCode::NotAuthorized, R::Disabled, message));
    }
    Ok((credentials, device, connect.keep_alive))
}
