//! AMQP consumer helpers (fe2o3-amqp client).

use std::net::SocketAddr;
use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::link::ReceiverAttachError;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Session};
use iotpipe::amqp::auth::ConsumerCredentials;
use iotpipe::sign::SignMethod;

use super::WAIT;

pub const ACCESS_KEY: (&str, &str) = ("LTAItest", "test-secret");

pub fn login(client_id: &str, group: &str, method: SignMethod) -> (String, String) {
    let c = ConsumerCredentials {
        client_id: client_id.into(),
        access_key_id: ACCESS_KEY.0.into(),
        group_id: group.into(),
        method,
        timestamp: iotpipe::message::now_ms().to_string(),
        instance_id: None,
    };
    (c.username(), c.password(ACCESS_KEY.1))
}

pub struct Consumer {
    pub connection: ConnectionHandle<()>,
    pub session: SessionHandle<()>,
    pub receiver: Receiver,
}

/// Opens a connection with the given login (no link yet).
pub async fn open(addr: SocketAddr, username: &str, password: &str) -> Result<ConnectionHandle<()>, String> {
    Connection::builder()
        .container_id("test-consumer")
        .sasl_profile(SaslProfile::Plain { username: username.into(), password: password.into() })
        .open(format!("amqp://{addr}").as_str())
        .await
        .map_err(|e| format!("{e:?}"))
}

/// A consumer of `group` with one receiver link, settling by hand.
pub async fn consumer(addr: SocketAddr, client_id: &str, group: &str) -> Consumer {
    let (u, p) = login(client_id, group, SignMethod::HmacSha1);
    let connection = open(addr, &u, &p).await.unwrap_or_else(|e| panic!("login of {client_id}: {e}"));
    attach(connection).await
}

pub async fn attach(connection: ConnectionHandle<()>) -> Consumer {
    try_attach(connection).await.unwrap()
}

/// A session and a receiver link on `connection`; the link's error if its attach fails.
pub async fn try_attach(mut connection: ConnectionHandle<()>) -> Result<Consumer, ReceiverAttachError> {
    let mut session = Session::begin(&mut connection).await.expect("a session");
    let receiver =
        Receiver::builder().name("rx").source("default").auto_accept(false).attach(&mut session).await?;
    Ok(Consumer { connection, session, receiver })
}

/// What a client refused at its link is told: the debug text of the error. The refusal reaches
/// the client at its first receive, or already at the attach when its library answered the
/// server's detach by itself and the server's close came before the attach finished.
pub async fn refusal(connection: ConnectionHandle<()>) -> String {
    let mut c = match try_attach(connection).await {
        Ok(c) => c,
        Err(e) => return format!("{e:?}"),
    };
    let err = tokio::time::timeout(WAIT, c.receiver.recv::<Body<Value>>())
        .await
        .expect("the refused client must be told")
        .expect_err("the refused client must not receive");
    format!("{err:?}")
}

/// What a test reads of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub message_id: String,
    pub topic: String,
    pub generate_time: i64,
    pub tag: Option<String>,
    pub body: Vec<u8>,
    pub amqp_message_id: Option<String>,
}

pub fn read(d: &Delivery<Body<Value>>) -> Received {
    let props = &d.message().application_properties.as_ref().expect("application properties").0;
    let string = |k: &str| match props.get(k) {
        Some(SimpleValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let generate_time = match props.get("generateTime") {
        Some(SimpleValue::Long(v)) => *v,
        other => panic!("generateTime is {other:?}"),
    };
    let body = match d.body() {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect(),
        other => panic!("body is not one data section: {other:?}"),
    };
    let amqp_message_id =
        d.message().properties.as_ref().and_then(|p| p.message_id.as_ref()).map(|id| match id {
            fe2o3_amqp::types::messaging::MessageId::String(s) => s.clone(),
            other => format!("{other:?}"),
        });
    Received {
        message_id: string("messageId").expect("messageId"),
        topic: string("topic").expect("topic"),
        generate_time,
        tag: string("tag"),
        body,
        amqp_message_id,
    }
}

impl Consumer {
    /// The next delivery, or a panic after WAIT.
    pub async fn next(&mut self) -> Delivery<Body<Value>> {
        tokio::time::timeout(WAIT, self.receiver.recv::<Body<Value>>())
            .await
            .expect("no delivery in time")
            .expect("receive failed")
    }

    /// The next delivery within `within`, if any.
    pub async fn try_next(&mut self, within: Duration) -> Option<Delivery<Body<Value>>> {
        tokio::time::timeout(within, self.receiver.recv::<Body<Value>>()).await.ok().and_then(Result::ok)
    }

    pub async fn accept(&mut self, d: &Delivery<Body<Value>>) {
        self.receiver.accept(d).await.unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.receiver.close().await;
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}
