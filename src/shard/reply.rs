//! After a command: its reply goes back to the control server, and a successful call restarts
//! the join deadline of its room and user ([`crate::sfu::Sfu::touch`]).

use std::rc::Rc;
use std::time::Instant;

use super::run::Shard;
use super::Reply;
use crate::api::ApiError;

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
        let _ = to.send(reply);
    }
}
