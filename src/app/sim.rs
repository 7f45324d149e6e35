//! `sim`: serve a CompShare simulator over HTTP until Ctrl-C, to rehearse a teardown with
//! the real binary.

use anyhow::Context;

use super::terminal::print;
use super::{CmdResult, Ctx, Exit};
use crate::cli::SimArgs;
use crate::sim::{Scenario, SimHandle};

impl Ctx {
    /// `compshare-teardown sim`: serve until Ctrl-C.
    pub(super) async fn sim(&self, a: SimArgs) -> CmdResult<Exit> {
        let mut scenario = match &a.scenario {
            Some(path) => {
                let text = crate::textfile::read(path, crate::textfile::PLAN_FILE)
                    .with_context(|| format!("cannot read scenario {}", path.display()))?;
                Scenario::from_json(&text).with_context(|| format!("scenario {}", path.display()))?
            }
            None => {
                let mut s = Scenario::generated(a.instances, a.seed);
                s.time_scale = a.time_scale;
                s
            }
        };
        if let Some(k) = &self.global.public_key {
            scenario.public_key.clone_from(k);
        }
        if let Some(k) = &self.global.private_key {
            scenario.private_key = k.expose().to_owned();
        }
        scenario.validate().context("invalid simulator settings")?;
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let addr = listener.local_addr().context("no local address")?;
        // Listening on every address (0.0.0.0, ::): the client reaches it on loopback, the only
        // plain-http host it accepts.
        let mut local = addr;
        if addr.ip().is_unspecified() {
            local.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let handle = SimHandle::new(scenario);
        print(&format!(
            "CompShare simulator listening on http://{addr}/ ({} instances)\n\
             export COMPSHARE_BASE_URL=http://{local}/\n\
             export COMPSHARE_PUBLIC_KEY={}\n\
             export COMPSHARE_PRIVATE_KEY={}\n\
             state: http://{addr}/_sim/state — Ctrl-C to stop\n",
            handle.ids().len(),
            handle.public_key(),
            handle.private_key().expose(),
        ));
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        crate::sim::serve(listener, handle, shutdown)
            .await
            .context("simulator failed")?;
        Ok(Exit::Ok)
    }
}
