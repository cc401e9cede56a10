//! [`StepEnv`]: what step code may use of the build — the store, the few options steps
//! read, the reporter, the privilege, the cancel token — and [`Step`]: the one step at
//! hand. Step functions take these two instead of the whole builder and a long argument
//! list, so what a step can reach is written down in one place (and the orchestrator keeps
//! what only it needs: the plan, the records, the cache lookups).

use super::{Cancel, Reporter, State};
use crate::context::Context;
use crate::dockerfile::{Instruction, Spanned};
use crate::layer::Compression;
use crate::plan::{Expanded, Scope};
use crate::registry::RegistryOptions;
use crate::sandbox::Network;
use crate::store::Store;
use crate::userns::Privilege;

/// The build as step code sees it.
pub(super) struct StepEnv<'a> {
    pub store: &'a Store,
    pub rep: &'a Reporter,
    pub cancel: &'a Cancel,
    pub privilege: &'a Privilege,
    /// The build context; `None` when the Dockerfile came from stdin.
    pub context: Option<&'a Context>,
    /// How the Dockerfile is named in messages.
    pub df_name: &'a str,
    /// The network a RUN gets without `--network`.
    pub network: Network,
    /// Resource limits of every RUN.
    pub limits: &'a crate::sandbox::Limits,
    pub compression: Compression,
    pub source_date_epoch: Option<i64>,
    /// For ADD's downloads.
    pub registry: &'a RegistryOptions,
    /// Secrets, SSH sockets and entitlements for `RUN --mount` and `RUN --network`.
    pub mounts: &'a crate::mounts::MountOptions,
    /// The context's stat cache, loaded from the store at the first COPY that needs it.
    pub stat_cache: &'a std::sync::Mutex<Option<crate::context::StatCache>>,
}

impl StepEnv<'_> {
    /// Passes a warning of the sandbox or the unpacker on to the reporter.
    pub fn warn(&self) -> impl FnMut(&str) + '_ {
        |w: &str| self.rep.warn(w)
    }

    /// Hashes COPY sources from the build context through its stat cache (see
    /// [`crate::context::StatCache`]): unchanged files are not read again.
    pub fn hash_context_sources(
        &self,
        sources: &[crate::context::Source],
        dest: &str,
        opts: &crate::context::CopyOptions,
    ) -> crate::error::Result<crate::context::InputsHash> {
        let mut guard = self.stat_cache.lock().unwrap_or_else(|e| e.into_inner());
        let cache = match guard.as_mut() {
            Some(c) => c,
            None => {
                let bytes = match self.context {
                    Some(ctx) => self.store.record_get(&super::stat_cache_name(ctx.root()))?,
                    None => None,
                };
                guard.insert(crate::context::StatCache::from_bytes(
                    bytes.as_deref().unwrap_or_default(),
                ))
            }
        };
        Ok(crate::context::hash_sources_cached(
            sources, dest, opts, cache,
        )?)
    }

    /// `FILE:LINE` of a step, for messages.
    pub fn location(&self, step: &Step<'_>) -> String {
        format!("{}:{}", self.df_name, step.inst.span.line)
    }
}

/// One step: its number in the build, its instruction as written and expanded, the state
/// it starts from and the scope it sees.
pub(super) struct Step<'a> {
    /// 1-based, across stages (as progress shows it).
    pub no: usize,
    pub inst: &'a Spanned<Instruction>,
    pub exp: &'a Expanded,
    pub state: &'a State,
    pub scope: &'a Scope,
}
