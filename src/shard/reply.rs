//! After a command: its reply goes back to the control server; a successful call restarts the
//! join deadline of its room and user ([`crate::sfu::Sfu::touch`]); and a transport created for
//! a caller that has gone (its HTTP connection closed while the shard worked, so nobody will
//! ever learn the transport's id) is closed again at once, its port released: a request that
//! did not get its answer leaves nothing behind.

use std::rc::Rc;
use std::time::Instant;

use super::run::Shard;
use super::Reply;
use crate::sfu::api::ApiError;

/// A command's room and user (see [`super::Command::scope`]).
pub(super) type Scope = Option<(String, Option<String>)>;

impl Shard {
    pub(super) fn answer(
        self: &Rc<Self>,
        to: flume::Sender<Result<Reply, ApiError>>,
        reply: Result<Reply, ApiError>,
        scope: Scope,
    ) {
        let Some((channel, user)) = scope.filter(|_| reply.is_ok()) else {
            let _ = to.send(reply);
            return;
        };
        self.sfu
            .borrow_mut()
            .touch(&channel, user.as_deref(), Instant::now());
        let created = match &reply {
            Ok(Reply::Transport(t)) => Some(t.id.clone()),
            _ => None,
        };
        if to.send(reply).is_ok() {
            return;
        }
        if let (Some(transport_id), Some(user)) = (created, user) {
            tracing::info!(channel = %channel, user = %user, transport = %transport_id, "caller gone before the reply: transport closed again");
            self.with_core(|sfu, _| sfu.abandon_transport(&channel, &user, &transport_id));
        }
    }
}
