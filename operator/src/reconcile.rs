//! One reconcile of a MetaStore, in phases: hold (paused or an invalid spec: report it and stop)
//! → apply the Services → observe the StatefulSet and the members → plan one membership step →
//! act (PodDisruptionBudget, StatefulSet, the step, events) → status. Objects are applied
//! server-side with one field manager.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bootstrap_restore::{self, RestoreFrom};
use crate::builders;
use crate::constants::{
    LABEL_VOTER, MAX_REPLICAS, OPERATOR_NAME, REQUEUE_AFTER_ERROR, REQUEUE_INVALID_SPEC,
    REQUEUE_PAUSED, REQUEUE_PROGRESSING, REQUEUE_REFUSED, REQUEUE_STEADY,
};
use crate::context::{Context, Error};
use crate::crd::{MetaStore, MetaStoreStatus, RecoveryStatus};
use crate::executor::{self, ClusterView, Outcome, Target};
use crate::metrics::OperationResult;
use crate::planner::{plan, Observed, Step};
use crate::status::build_status;
use crate::tls_secrets::{self, TlsReady};
use crate::volume_expansion::{self, Claim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// One reconcile, phase after phase; each returns what the next one needs.
pub(crate) async fn run(ms: &MetaStore, ctx: &Context) -> Result<Action, Error> {
    let mut r = Reconcile::new(ms, ctx)?;
    if let Some(hold) = Hold::of(ms) {
        return r.report_hold(hold).await;
    }
    r.apply_services().await?;
    r.tls = match tls_secrets::ensure(ms, &ctx.client).await {
        Ok(t) => t,
        Err(e) => {
            r.event(EventType::Warning, "TLSNotReady", e.to_string())
                .await;
            return Err(e);
        }
    };
    r.tls.dial.credentials = match crate::auth_secret::ensure(ms, &ctx.client).await {
        Ok(c) => c,
        Err(e) => {
            r.event(EventType::Warning, "AuthNotReady", e.to_string())
                .await;
            return Err(e);
        }
    };
    for name in &r.tls.issued {
        r.event(
            EventType::Normal,
            "CertificateIssued",
            format!("issued the certificate in Secret {name}"),
        )
        .await;
    }
    if crate::status::even_voters_warning_due(ms) {
        // Allowed (a step while scaling, say), but rarely what is wanted.
        let (_, reason, why) = crate::status::fault_tolerance(ms.spec.replicas);
        r.event(EventType::Warning, reason, why).await;
    }
    let seen = r.observe().await?;
    if let Some(why) = &seen.restore_blocked {
        return r.report_hold(Hold::RestoreBlocked(why.clone())).await;
    }
    if !seen.retained_volumes.is_empty() {
        return r
            .report_hold(Hold::RetainedVolumes(seen.retained_volumes.clone()))
            .await;
    }
    let step = hold_growth_during_rollout(plan_step(ms, &seen), seen.template_rolling);
    let recovering = matches!(
        step,
        Step::QuorumLost(_)
            | Step::ForceNewCluster { .. }
            | Step::NoMemberAnswers(_)
            | Step::RestoreLatestBackup
    );
    let mut acted = r.act(&seen, step).await?;
    if !recovering && seen.view.leader.is_some() {
        acted.auth = r.sync_auth(&seen).await;
    }
    if recovery_requested(ms) && acted.step.awaiting_opt_in().is_some() {
        // The opt-in was given before the plan now shown (or there is nothing it could do):
        // it is not taken as consent to this plan.
        r.clear_recovery_request().await?;
        r.event(
            EventType::Warning,
            "RecoveryRequestCleared",
            format!(
                "removed {RECOVER_ANNOTATION}: it was not given for the plan now in status; read it and opt in again"
            ),
        )
        .await;
    } else if recovery_requested(ms) && !recovering && seen.view.leader.is_some() {
        // The cluster has quorum (again, or never lost it): the opt-in has nothing left to do.
        r.clear_recovery_request().await?;
        r.event(
            EventType::Normal,
            "RecoveryRequestCleared",
            format!("removed {RECOVER_ANNOTATION}: the cluster has a leader and quorum"),
        )
        .await;
    }
    if let Some(due) = crate::backup_schedule::run(ms, ctx).await? {
        acted.requeue = acted.requeue.min(due);
    }
    r.report(&seen, acted).await
}

/// Why a MetaStore is left as it is this time.
enum Hold {
    /// `spec.paused`.
    Paused,
    /// The spec fails validation (the message names the field).
    InvalidSpec(String),
    /// The cluster is to start from a backup that cannot be used (yet): it is not created.
    RestoreBlocked(String),
    /// Volumes of an earlier MetaStore of this name are still there: a new cluster is not
    /// created on another cluster's data.
    RetainedVolumes(Vec<String>),
}

impl Hold {
    fn of(ms: &MetaStore) -> Option<Hold> {
        if ms.spec.paused {
            return Some(Hold::Paused);
        }
        ms.spec
            .validate()
            .and_then(|()| crate::settings::validate(&ms.spec))
            .err()
            .map(Hold::InvalidSpec)
    }
}

/// What the observe phase found.
struct Seen {
    /// Replicas of the StatefulSet (0 when it does not exist yet).
    sts_replicas: i32,
    /// Client URLs of the pods the StatefulSet runs (at least pod 0's).
    endpoints: Vec<String>,
    /// The members as they answered.
    view: ClusterView,
    /// The cluster exists, so new pods must join it rather than bootstrap one.
    bootstrapped: bool,
    /// The StatefulSet is replacing pods for a new template.
    template_rolling: bool,
    /// Until it exists: the backup member 0 starts from (`spec.bootstrap.restore`).
    restore: Option<RestoreFrom>,
    /// Why that backup cannot be used yet.
    restore_blocked: Option<String>,
    /// A recovery from a backup under way (until the restored cluster answers).
    recovery: Option<RecoveryStatus>,
    /// During it, the lost cluster's StatefulSet is still there.
    old_cluster_left: bool,
    /// When nobody answers: the newest successful backup (name, source, description).
    latest_backup: Option<(String, RestoreFrom, String)>,
    /// Ordinals whose pod says its member's data is gone.
    data_lost: Vec<i32>,
    /// Ordinals whose pod runs an older template than the StatefulSet's.
    outdated: Vec<i32>,
    /// Member pods.
    pods: Vec<Pod>,
    /// Before the cluster exists: volumes an earlier MetaStore of this name left (older than
    /// this one), which a new member would start on.
    retained_volumes: Vec<String>,
    /// The image tag the StatefulSet's template runs now.
    template_version: Option<String>,
    /// The member volumes.
    claims: Vec<Claim>,
    /// The size in the StatefulSet's volume claim template (it cannot change).
    claim_template: Option<Quantity>,
}

/// Degraded reason while volumes of an earlier MetaStore of the same name hold a new one back.
pub const RETAINED_VOLUMES: &str = "RetainedVolumes";

/// Member volumes of this MetaStore's name made before it was (by an earlier MetaStore of the
/// same name whose volumes were retained), not being deleted.
fn retained_volumes(ms: &MetaStore, claims: &[PersistentVolumeClaim]) -> Vec<String> {
    let Some(born) = ms.metadata.creation_timestamp.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<String> = claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| {
            c.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| t.0 < born.0)
        })
        .map(|c| c.name_any())
        .filter(|n| builders::claim_ordinal(ms, n).is_some())
        .collect();
    out.sort();
    out
}

/// What the status says about retained volumes, and what the user can do.
fn retained_volumes_message(ms: &MetaStore, claims: &[String]) -> String {
    format!(
        "volumes {} were left by an earlier MetaStore named {} (they are older than this one) and          hold that cluster's data: the new cluster is not created on them. To start empty, delete          them (kubectl delete pvc {}); to bring that data back, restore one of its backups          (spec.bootstrap.restore)",
        claims.join(", "),
        ms.name_any(),
        claims.join(" ")
    )
}

/// The plan phase: the planner's next step for what was seen. Pure.
fn plan_step(ms: &MetaStore, seen: &Seen) -> Step {
    plan(&Observed {
        spec_replicas: ms.spec.replicas,
        sts_replicas: seen.sts_replicas,
        members: seen
            .view
            .members
            .as_ref()
            .map(|m| m.iter().map(|v| v.member.clone()).collect()),
        leader: seen.view.leader,
        recover: recovery_requested(ms),
        reported: degraded_reason(ms),
        bootstrapped: seen.bootstrapped,
        unavailable_for: unavailable_for(ms),
        latest_backup: seen.latest_backup.as_ref().map(|(_, _, what)| what.clone()),
        old_cluster_left: seen.old_cluster_left,
        data_lost: seen.data_lost.clone(),
        outdated: seen.outdated.clone(),
        cluster_version: seen.view.cluster_version.clone(),
        target_version: target_version(ms).to_string(),
    })
}

/// The version (image tag) the spec asks for.
fn target_version(ms: &MetaStore) -> &str {
    ms.spec
        .version
        .as_deref()
        .unwrap_or(crate::crd::DEFAULT_VERSION)
}

/// The MetaStore whose StatefulSet is applied: as the user asked, except for a version change
/// the rules refuse, which the template does not take (a pod restarted for any reason would
/// otherwise come back on a version that cannot run in this cluster).
fn template_source(ms: &MetaStore, seen: &Seen) -> MetaStore {
    let refused =
        seen.view.cluster_version.as_deref().is_some_and(|c| {
            crate::rollout::version_change_refusal(c, target_version(ms)).is_some()
        });
    let mut ms = ms.clone();
    if refused {
        if let Some(v) = &seen.template_version {
            ms.spec.version = Some(v.clone());
        }
    }
    // The quota follows the size the volumes were given.
    if let Some(wanted) = builders::quantity_bytes(&builders::volume_size(&ms.spec)) {
        let template = seen
            .claim_template
            .as_ref()
            .and_then(builders::quantity_bytes);
        let effective = volume_expansion::effective_bytes(&seen.claims, wanted, template);
        if effective != wanted {
            ms.spec.storage.size = seen.claim_template.clone();
        }
    }
    ms
}

/// The member volumes among `claims`, with their requested and actual sizes.
fn member_claims(ms: &MetaStore, claims: &[PersistentVolumeClaim]) -> Vec<Claim> {
    claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| builders::claim_ordinal(ms, &c.name_any()).is_some())
        .map(|c| Claim {
            name: c.name_any(),
            requested: c
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
                .and_then(builders::quantity_bytes),
            capacity: c
                .status
                .as_ref()
                .and_then(|s| s.capacity.as_ref()?.get("storage"))
                .and_then(builders::quantity_bytes),
        })
        .collect()
}

/// The size in a StatefulSet's volume claim template.
fn claim_template_size(sts: &StatefulSet) -> Option<Quantity> {
    sts.spec
        .volume_claim_templates
        .as_ref()?
        .first()?
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .cloned()
}

/// Ordinals of the member pods on an older template than the StatefulSet's (their
/// `controller-revision-hash` is not its update revision); nothing while the StatefulSet
/// controller has not seen its newest template yet.
fn outdated_ordinals(ms: &MetaStore, sts: &StatefulSet, pods: &[Pod]) -> Vec<i32> {
    let Some(st) = &sts.status else {
        return Vec::new();
    };
    if st.observed_generation.unwrap_or(0) < sts.metadata.generation.unwrap_or(0) {
        return Vec::new();
    }
    let Some(update) = &st.update_revision else {
        return Vec::new();
    };
    let mut out: Vec<i32> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.labels()
                .get("controller-revision-hash")
                .is_some_and(|h| h != update)
        })
        .filter_map(|p| crate::names::pod_ordinal(ms, &p.name_any()))
        .collect();
    out.sort_unstable();
    out
}

/// Member pods whose [`LABEL_VOTER`] does not match their member's role: (pod, `"true"` for a
/// voter or `"false"` for a learner). Pods of members not seen are left as they are.
fn voter_label_changes(
    ms: &MetaStore,
    pods: &[Pod],
    view: &ClusterView,
) -> Vec<(String, &'static str)> {
    let Some(members) = &view.members else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let name = p.name_any();
            let k = crate::names::pod_ordinal(ms, &name)?;
            let m = members.iter().find(|m| m.member.ordinal == Some(k))?;
            let want = if m.member.is_learner { "false" } else { "true" };
            (p.labels().get(LABEL_VOTER).map(String::as_str) != Some(want)).then_some((name, want))
        })
        .collect()
}

/// The image tag of the StatefulSet's member container.
fn template_tag(sts: &StatefulSet) -> Option<String> {
    let image = sts
        .spec
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()?;
    image.rsplit_once(':').map(|(_, tag)| tag.to_string())
}

/// The Degraded reason the status shows, if it is degraded.
fn degraded_reason(ms: &MetaStore) -> Option<String> {
    let st = ms.status.as_ref()?;
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True")?;
    Some(c.reason.clone())
}

/// How long the status has shown the cluster unavailable (zero when available or unknown).
fn unavailable_for(ms: &MetaStore) -> Duration {
    let since = ms.status.as_ref().and_then(|st| {
        st.conditions
            .iter()
            .find(|c| c.type_ == "Available" && c.status == "False")
    });
    since
        .and_then(|c| {
            let d = k8s_openapi::jiff::Timestamp::now().duration_since(c.last_transition_time.0);
            Duration::try_from(d).ok()
        })
        .unwrap_or_default()
}

/// True for a StatefulSet made for a restore (its pods restore a backup before they start).
fn restores(sts: &StatefulSet) -> bool {
    sts.spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == builders::RESTORE_CONTAINER))
}

/// The annotation by which a user opts in to disaster recovery.
pub const RECOVER_ANNOTATION: &str = "metastore.io/recover";

/// True when the MetaStore carries `metastore.io/recover: "true"`.
fn recovery_requested(ms: &MetaStore) -> bool {
    ms.annotations()
        .get(RECOVER_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Not steady while pods are still being replaced by a template change (e.g. the switch to
/// joining right after bootstrap): judged on the StatefulSet as just applied.
fn wait_for_rollout(step: Step, applied: &StatefulSet) -> Step {
    if matches!(step, Step::Steady { .. }) && rolling_out(applied) {
        Step::Wait("member pods are being updated".into())
    } else {
        step
    }
}

/// No member is added and no pod created while the StatefulSet replaces its pods for a new
/// template (right after bootstrap, member 0 restarts to join rather than found): a pod
/// created meanwhile could get the old template (founding flags, the restore init container).
fn hold_growth_during_rollout(step: Step, template_rolling: bool) -> Step {
    let grows = matches!(step, Step::AddLearner { .. })
        || matches!(&step, Step::ScaleStatefulSet { reason, .. } if reason.starts_with("start learner"));
    if grows && template_rolling {
        Step::Wait("member pods are being updated".into())
    } else {
        step
    }
}

/// What the act phase leaves for the status phase.
struct Acted {
    /// The step as carried out (a Steady step becomes a Wait during a rollout).
    step: Step,
    /// What is under way, for `status.currentOperation`.
    operation: Option<String>,
    /// Membership policy generation after this step's pushes.
    policy_generation: u64,
    /// When to look again.
    requeue: Duration,
    /// A recovery from a backup under way, for `status.recovery`.
    recovery: Option<RecoveryStatus>,
    /// Why the member volumes could not grow to `spec.storage.size`.
    expansion_refused: Option<String>,
    /// Where `spec.auth` stands on the cluster (None without it, or not looked at).
    auth: Option<Result<executor::AuthSync, String>>,
}

/// One reconcile of one MetaStore: the resource, where it lives and the shared context.
struct Reconcile<'a> {
    ms: &'a MetaStore,
    ctx: &'a Context,
    name: String,
    ns: String,
    /// Policy generation the last reconcile reported.
    policy_generation: u64,
    /// How to reach the members, from the TLS Secrets.
    tls: TlsReady,
}

impl<'a> Reconcile<'a> {
    fn new(ms: &'a MetaStore, ctx: &'a Context) -> Result<Self, Error> {
        let name = ms.name_any();
        let ns = ms
            .namespace()
            .ok_or_else(|| Error::NoNamespace(name.clone()))?;
        Ok(Reconcile {
            ms,
            ctx,
            name,
            ns,
            policy_generation: ms.status.as_ref().map_or(0, |s| s.policy_generation),
            tls: TlsReady::default(),
        })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.ctx.client.clone(), &self.ns)
    }

    /// Server-side apply of `obj`, owning every field it sets.
    async fn apply<K>(&self, name: &str, obj: &K) -> Result<K, kube::Error>
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        self.api::<K>()
            .patch(
                name,
                &PatchParams::apply(OPERATOR_NAME).force(),
                &Patch::Apply(obj),
            )
            .await
    }

    /// Publishes an event on the MetaStore; a failure to publish is only logged.
    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self
            .ctx
            .recorder
            .publish(&ev, &self.ms.object_ref(&()))
            .await
        {
            tracing::warn!("cannot publish event: {e}");
        }
    }

    /// Reports a paused MetaStore, an invalid spec, an unusable restore source or retained
    /// volumes, touching nothing else.
    async fn report_hold(&self, hold: Hold) -> Result<Action, Error> {
        let retained = match &hold {
            Hold::RetainedVolumes(claims) => Some(retained_volumes_message(self.ms, claims)),
            _ => None,
        };
        let (step, held, requeue) = match &hold {
            Hold::Paused => (Step::Wait("paused".into()), None, REQUEUE_PAUSED),
            Hold::InvalidSpec(why) => {
                self.event(EventType::Warning, "InvalidSpec", why.clone())
                    .await;
                (
                    Step::Wait("invalid spec".into()),
                    Some(("InvalidSpec", why.as_str())),
                    REQUEUE_INVALID_SPEC,
                )
            }
            Hold::RetainedVolumes(_) => {
                let why = retained.as_deref().unwrap_or_default();
                self.event(EventType::Warning, RETAINED_VOLUMES, why.to_string())
                    .await;
                (
                    Step::Wait("waiting for the retained volumes to go".into()),
                    Some((RETAINED_VOLUMES, why)),
                    REQUEUE_REFUSED,
                )
            }
            Hold::RestoreBlocked(why) => {
                self.event(EventType::Warning, "RestoreSourceNotReady", why.clone())
                    .await;
                (
                    Step::Wait("waiting for the backup to restore".into()),
                    Some(("RestoreSourceNotReady", why.as_str())),
                    REQUEUE_REFUSED,
                )
            }
        };
        let status = build_status(
            self.ms,
            &ClusterView::default(),
            &step,
            None,
            held,
            self.policy_generation,
            self.ms.status.as_ref().and_then(|s| s.recovery.clone()),
        );
        self.patch_status(status).await?;
        Ok(Action::requeue(requeue))
    }

    /// The Services depend on the spec alone, and members need them to find each other.
    async fn apply_services(&self) -> Result<(), Error> {
        let ms = self.ms;
        self.apply(
            &builders::peer_service_name(ms),
            &builders::peer_service(ms),
        )
        .await?;
        self.apply(
            &builders::client_service_name(ms),
            &builders::client_service(ms),
        )
        .await?;
        Ok(())
    }

    /// The observe phase: the StatefulSet's size and, once it runs pods, the members.
    async fn observe(&self) -> Result<Seen, Error> {
        let ms = self.ms;
        let sts = self.api::<StatefulSet>().get_opt(&self.name).await?;
        let sts_replicas = sts.as_ref().and_then(|s| s.spec.replicas).unwrap_or(0);
        let template_rolling = sts.as_ref().is_some_and(template_rolling_out);
        let endpoints: Vec<String> = (0..sts_replicas.max(1))
            .map(|k| builders::client_url(ms, k))
            .collect();
        let view = if sts_replicas > 0 {
            executor::observe(&self.tls.dial, &endpoints, |u| ordinal_of(ms, u)).await
        } else {
            ClusterView::default()
        };
        // A recovery from a backup lasts until the restored cluster answers; meanwhile the
        // lost cluster does not count as existing.
        let recovery = ms
            .status
            .as_ref()
            .and_then(|s| s.recovery.clone())
            .filter(|_| view.cluster_id.is_none());
        let bootstrapped = view.cluster_id.is_some()
            || (recovery.is_none() && ms.status.as_ref().is_some_and(|s| s.cluster_id.is_some()));
        let old_cluster_left = recovery.is_some()
            && sts
                .as_ref()
                .is_some_and(|s| s.metadata.deletion_timestamp.is_some() || !restores(s));
        let latest_backup = if bootstrapped && view.members.is_none() {
            bootstrap_restore::latest_backup(ms, &self.ctx.client).await?
        } else {
            None
        };
        let (restore, restore_blocked) = if bootstrapped {
            (None, None)
        } else if let Some(r) = &recovery {
            (Some(RestoreFrom::of_recovery(r)), None)
        } else {
            match bootstrap_restore::resolve(ms, &self.ctx.client).await {
                Ok(r) => (r, None),
                Err(why) => (None, Some(why)),
            }
        };
        let pods = if sts.is_some() {
            let selector = builders::selector_string(ms);
            self.api::<Pod>()
                .list(&kube::api::ListParams::default().labels(&selector))
                .await?
                .items
        } else {
            Vec::new()
        };
        let data_lost = if view.members.is_some() {
            crate::lost_data::data_lost_ordinals(ms, &pods)
        } else {
            Vec::new()
        };
        let outdated = sts
            .as_ref()
            .map_or_else(Vec::new, |s| outdated_ordinals(ms, s, &pods));
        let template_version = sts.as_ref().and_then(template_tag);
        let all_claims = self
            .api::<PersistentVolumeClaim>()
            .list(&Default::default())
            .await?
            .items;
        let retained_volumes = if sts.is_none() && !bootstrapped && recovery.is_none() {
            retained_volumes(ms, &all_claims)
        } else {
            Vec::new()
        };
        let claims = member_claims(ms, &all_claims);
        let claim_template = sts.as_ref().and_then(claim_template_size);
        Ok(Seen {
            sts_replicas,
            endpoints,
            view,
            bootstrapped,
            template_rolling,
            restore,
            restore_blocked,
            recovery,
            old_cluster_left,
            latest_backup,
            data_lost,
            outdated,
            pods,
            retained_volumes,
            template_version,
            claims,
            claim_template,
        })
    }

    /// The act phase: applies the PodDisruptionBudget and the StatefulSet the step asks for, then
    /// carries the step out.
    async fn act(&self, seen: &Seen, step: Step) -> Result<Acted, Error> {
        let mut acted = Acted {
            step,
            operation: None,
            policy_generation: self.policy_generation,
            requeue: REQUEUE_PROGRESSING,
            recovery: seen.recovery.clone(),
            expansion_refused: None,
            auth: None,
        };
        if matches!(acted.step, Step::RestoreLatestBackup) {
            // The lost cluster's StatefulSet is deleted, not applied.
            self.replace_with_backup(seen, &mut acted).await?;
            return Ok(acted);
        }
        let applied = self.apply_workload(seen, &acted.step).await?;
        self.nudge_if_stuck(seen, &applied).await;
        self.label_voters(seen).await?;
        acted.expansion_refused = self.expand_volumes(seen).await;
        acted.step = wait_for_rollout(acted.step, &applied);
        // A template applied just now (right after bootstrap, say): no member is added until
        // the pods are replaced, or the new member's pod could start from the old one.
        if matches!(acted.step, Step::AddLearner { .. }) && template_rolling_out(&applied) {
            acted.step = Step::Wait("member pods are being updated".into());
        }
        let kind = step_kind(&acted.step);
        match &acted.step {
            Step::Bootstrap => {
                let (operation, note) = match &seen.restore {
                    Some(from) => (
                        format!("restoring {} into a one-member cluster", from.url),
                        format!("created the first member, which restores {}", from.url),
                    ),
                    None => (
                        "bootstrapping a one-member cluster".to_string(),
                        "created the first member".to_string(),
                    ),
                };
                acted.operation = Some(operation);
                self.event(EventType::Normal, "Bootstrap", note).await;
                self.ctx.metrics.operation(kind, OperationResult::Ok);
            }
            Step::ScaleStatefulSet { replicas, reason } => {
                let msg = format!(
                    "StatefulSet {} → {replicas} replicas ({reason})",
                    seen.sts_replicas
                );
                self.event(EventType::Normal, "StatefulSetScaled", msg.clone())
                    .await;
                self.ctx.metrics.operation(kind, OperationResult::Ok);
                acted.operation = Some(msg);
            }
            Step::RestartMember { ordinal, .. } => {
                let pod = builders::pod_name(self.ms, *ordinal);
                self.api::<Pod>().delete(&pod, &Default::default()).await?;
                let msg = format!(
                    "restarting member {pod} on the current template (version {})",
                    target_version(self.ms)
                );
                self.event(EventType::Normal, "MemberRestarted", msg.clone())
                    .await;
                self.ctx.metrics.operation(kind, OperationResult::Ok);
                acted.operation = Some(msg);
            }
            Step::Wait(why) => acted.operation = Some(why.clone()),
            Step::Refuse(why) => {
                self.event(EventType::Warning, "ScaleRefused", why.clone())
                    .await;
                self.ctx.metrics.operation(kind, OperationResult::Refused);
                acted.operation = Some(why.clone());
                acted.requeue = REQUEUE_REFUSED;
            }
            Step::QuorumLost(why) | Step::NoMemberAnswers(why) => {
                let reason = acted.step.awaiting_opt_in().map_or("", |(r, _)| r);
                self.event(EventType::Warning, reason, why.clone()).await;
                self.ctx.metrics.operation(kind, OperationResult::Refused);
                acted.operation = Some(why.clone());
                acted.requeue = REQUEUE_REFUSED;
            }
            _ => self.change_members(seen, &mut acted).await?,
        }
        Ok(acted)
    }

    /// Requeues the StatefulSet at the StatefulSet controller while a pod it owes is missing
    /// (see [`crate::sts_nudge`]). Best effort: a failure is logged and retried next time.
    async fn nudge_if_stuck(&self, seen: &Seen, sts: &StatefulSet) {
        let now = k8s_openapi::jiff::Timestamp::now();
        if !crate::sts_nudge::nudge_due(sts, &seen.pods, now) {
            return;
        }
        let patch = serde_json::json!({
            "metadata": {"annotations": {crate::sts_nudge::NUDGED_AT: now.to_string()}}
        });
        let missing = crate::sts_nudge::missing_ordinals(sts, &seen.pods);
        match self
            .api::<StatefulSet>()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::debug!(?missing, "nudged the StatefulSet controller"),
            Err(e) => tracing::debug!(?missing, "nudging the StatefulSet controller: {e}"),
        }
    }

    /// The PodDisruptionBudget (a quorum of the voters seen) and the StatefulSet (sized for the
    /// step); returns the StatefulSet as applied.
    async fn apply_workload(&self, seen: &Seen, step: &Step) -> Result<StatefulSet, Error> {
        let ms = self.ms;
        let voters = seen
            .view
            .members
            .iter()
            .flatten()
            .filter(|m| !m.member.is_learner)
            .count()
            .max(1) as i32;
        self.apply(&self.name, &builders::pod_disruption_budget(ms, voters))
            .await?;
        let sts_target = match step {
            Step::Bootstrap => 1,
            Step::ScaleStatefulSet { replicas, .. } => *replicas,
            _ => seen.sts_replicas,
        };
        let source = template_source(ms, seen);
        let mut sts = builders::stateful_set(
            &source,
            sts_target,
            seen.bootstrapped,
            self.tls.admin_cn.as_deref(),
            seen.restore.as_ref(),
        );
        // Immutable once made: volumes grow through their claims instead.
        if let Some(size) = &seen.claim_template {
            for t in sts.spec.volume_claim_templates.iter_mut().flatten() {
                if let Some(r) = t.spec.as_mut().and_then(|s| s.resources.as_mut()) {
                    r.requests
                        .get_or_insert_with(Default::default)
                        .insert("storage".into(), size.clone());
                }
            }
        }
        Ok(self.apply(&self.name, &sts).await?)
    }

    /// Asks every member volume smaller than `spec.storage.size` for that size; returns why the
    /// API server refused, if it did (the StorageClass does not allow expansion, say).
    async fn expand_volumes(&self, seen: &Seen) -> Option<String> {
        let size = builders::volume_size(&self.ms.spec);
        let wanted = builders::quantity_bytes(&size)?;
        let claims = self.api::<PersistentVolumeClaim>();
        let mut refused = None;
        for name in volume_expansion::to_expand(&seen.claims, wanted) {
            let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
            match claims
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.event(
                        EventType::Normal,
                        "VolumeExpansionRequested",
                        format!("asked {name} to grow to {}", size.0),
                    )
                    .await
                }
                Err(e) => {
                    let why = match e {
                        kube::Error::Api(a) => a.message,
                        e => e.to_string(),
                    };
                    self.event(
                        EventType::Warning,
                        "VolumeExpansionRefused",
                        format!("{name}: {why}"),
                    )
                    .await;
                    refused = Some(format!("{name}: {why}"));
                }
            }
        }
        refused
    }

    /// Keeps [`LABEL_VOTER`] on the member pods in step with the members' roles (the
    /// PodDisruptionBudget counts voters' pods only).
    async fn label_voters(&self, seen: &Seen) -> Result<(), Error> {
        let pods = self.api::<Pod>();
        for (name, voter) in voter_label_changes(self.ms, &seen.pods, &seen.view) {
            let patch = serde_json::json!({"metadata": {"labels": {LABEL_VOTER: voter}}});
            pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }

    /// A member step (or Steady's policy check), through the executor.
    async fn change_members(&self, seen: &Seen, acted: &mut Acted) -> Result<(), Error> {
        let ms = self.ms;
        let step = &acted.step;
        let kind = step_kind(step);
        if let Step::AddLearner { ordinal } = step {
            self.delete_stale_volume(*ordinal).await?;
        }
        let peer = |k: i32| builders::peer_url(ms, k);
        let target = Target {
            dial: &self.tls.dial,
            endpoints: &seen.endpoints,
            view: &seen.view,
            peer_url: &peer,
        };
        let steady = matches!(step, Step::Steady { .. });
        match executor::execute(step, &target, &mut acted.policy_generation).await {
            Ok(Outcome::Done(what)) if matches!(step, Step::ForceNewCluster { .. }) => {
                // Done once: the opt-in is consumed, so a later loss asks again.
                self.clear_recovery_request().await?;
                self.event(EventType::Warning, "RecoveryStarted", what.clone())
                    .await;
                self.ctx.metrics.operation(kind, OperationResult::Ok);
                acted.operation = Some(what);
            }
            Ok(Outcome::Done(what)) => {
                let what = match step {
                    Step::ReplaceLostMember { ordinal, .. } => format!(
                        "{what}: pod {} reports its data dir empty (its volume was lost), so the \
                         member cannot rejoin as itself; ordinal {ordinal} comes back as a learner \
                         on a new volume",
                        builders::pod_name(ms, *ordinal)
                    ),
                    _ => what,
                };
                if !what.is_empty() {
                    self.event(EventType::Normal, done_reason(step), what.clone())
                        .await;
                    if !steady {
                        acted.operation = Some(what);
                    }
                }
                self.ctx.metrics.operation(kind, OperationResult::Ok);
                if steady {
                    acted.requeue = REQUEUE_STEADY;
                }
            }
            Ok(Outcome::NotYet(why)) => {
                self.ctx.metrics.operation(kind, OperationResult::NotYet);
                acted.operation = Some(why);
            }
            Err(e) => {
                let msg = format!("{kind} failed: {e}");
                self.event(EventType::Warning, "MembershipStepFailed", msg.clone())
                    .await;
                self.ctx.metrics.operation(kind, OperationResult::Error);
                acted.operation = Some(msg);
                acted.requeue = REQUEUE_AFTER_ERROR;
            }
        }
        Ok(())
    }

    /// Removes `metastore.io/recover` once recovery has started.
    async fn clear_recovery_request(&self) -> Result<(), Error> {
        let patch = serde_json::json!({"metadata": {"annotations": {RECOVER_ANNOTATION: null}}});
        self.api::<MetaStore>()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Replaces a lost cluster with one restored from its latest backup (the user opted in to
    /// that plan). The intent goes into the status first, so an operator stopped at any point
    /// resumes the replacement; then every member's volume and the StatefulSet are deleted.
    /// Once both are gone, the planner bootstraps member 0 from the backup.
    async fn replace_with_backup(&self, seen: &Seen, acted: &mut Acted) -> Result<(), Error> {
        let recovery = match &seen.recovery {
            Some(r) => r.clone(),
            None => {
                let Some((backup, from, what)) = &seen.latest_backup else {
                    return Ok(());
                };
                let now = k8s_openapi::jiff::Timestamp::now();
                let r = RecoveryStatus {
                    backup: backup.clone(),
                    url: from.url.clone(),
                    endpoint: from.endpoint.clone(),
                    region: from.region.clone(),
                    credentials_secret: from.credentials_secret.clone(),
                    pvc: from.pvc.clone(),
                    cluster_token: format!(
                        "{}-recovered-{}",
                        self.ms.uid().unwrap_or_else(|| self.name.clone()),
                        now.as_second()
                    ),
                    started: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
                };
                let status = build_status(
                    self.ms,
                    &seen.view,
                    &acted.step,
                    None,
                    None,
                    acted.policy_generation,
                    Some(r.clone()),
                );
                self.patch_status(status).await?;
                self.clear_recovery_request().await?;
                self.event(
                    EventType::Warning,
                    "RecoveryStarted",
                    format!(
                        "replacing the lost cluster with {what}: deleting the StatefulSet and every member's volume"
                    ),
                )
                .await;
                self.ctx
                    .metrics
                    .operation(step_kind(&acted.step), OperationResult::Ok);
                r
            }
        };
        // Volumes first: were the StatefulSet gone and an old volume left, a new member 0 would
        // start on the lost cluster's data instead of the backup.
        let pvcs = self.api::<PersistentVolumeClaim>();
        for pvc in pvcs.list(&Default::default()).await?.items {
            let name = pvc.name_any();
            if builders::claim_ordinal(self.ms, &name).is_some()
                && pvc.metadata.deletion_timestamp.is_none()
            {
                pvcs.delete(&name, &Default::default()).await?;
            }
        }
        let sets = self.api::<StatefulSet>();
        if sets.get_opt(&self.name).await?.is_some() {
            // Foreground: the StatefulSet stays (terminating) until its pods are gone, so a new
            // one is not made while they still run.
            sets.delete(&self.name, &kube::api::DeleteParams::foreground())
                .await?;
        }
        acted.operation = Some(format!(
            "replacing the lost cluster with one restored from MetaStoreBackup {} ({}): removing its StatefulSet and volumes",
            recovery.backup, recovery.url
        ));
        acted.recovery = Some(recovery);
        Ok(())
    }

    /// A volume left by an earlier member at this ordinal holds a removed member's data, which
    /// the node refuses: the new member must start empty. A pod still there (a lost member's
    /// after a recovery) goes too, so that its volume can: the StatefulSet makes both anew.
    async fn delete_stale_volume(&self, ordinal: i32) -> Result<(), Error> {
        let pvcs = self.api::<PersistentVolumeClaim>();
        let claim = builders::data_claim_name(self.ms, ordinal);
        if pvcs.get_opt(&claim).await?.is_some() {
            pvcs.delete(&claim, &Default::default()).await?;
            let pods = self.api::<k8s_openapi::api::core::v1::Pod>();
            let pod = builders::pod_name(self.ms, ordinal);
            if pods.get_opt(&pod).await?.is_some() {
                pods.delete(&pod, &Default::default()).await?;
            }
            self.event(
                EventType::Normal,
                "StaleVolumeDeleted",
                format!("deleted {claim} left by a removed member"),
            )
            .await;
        }
        Ok(())
    }

    /// The status phase: the status from what was seen and done, and when to look again.
    /// Brings the cluster's auth to what `spec.auth` asks (see [`executor::sync_auth`]), with
    /// an Event when it changes; None without `spec.auth`.
    async fn sync_auth(&self, seen: &Seen) -> Option<Result<executor::AuthSync, String>> {
        let want = self.ms.spec.auth.as_ref()?.enabled;
        let secret = crate::auth_secret::secret_name(self.ms).unwrap_or_default();
        let outcome = executor::sync_auth(&self.tls.dial, &seen.endpoints, want).await;
        match &outcome {
            Ok(executor::AuthSync::Enabled { changed: true }) => {
                let why = format!("authentication enabled; root's password is in Secret {secret}");
                self.event(EventType::Normal, "AuthEnabled", why).await;
            }
            Ok(executor::AuthSync::Disabled { changed: true }) => {
                let why = "authentication disabled; users and roles are kept".to_string();
                self.event(EventType::Normal, "AuthDisabled", why).await;
            }
            Ok(_) => {}
            Err(e) => {
                self.event(EventType::Warning, "AuthNotSynced", e.to_string())
                    .await;
            }
        }
        Some(outcome.map_err(|e| e.to_string()))
    }

    async fn report(&self, seen: &Seen, acted: Acted) -> Result<Action, Error> {
        let status = build_status(
            self.ms,
            &seen.view,
            &acted.step,
            acted.operation,
            None,
            acted.policy_generation,
            acted.recovery,
        );
        let rollout = crate::status::Rollout {
            outdated: seen.outdated.len(),
            pods: seen.pods.len(),
            target: target_version(self.ms).to_string(),
        };
        let status = crate::status::with_rollout(status, self.ms, &rollout);
        let status = crate::status::with_storage(
            status,
            self.ms,
            &seen.claims,
            acted.expansion_refused.as_deref(),
        );
        let status = crate::status::with_auth(status, self.ms, acted.auth.as_ref());
        self.patch_status(status).await?;
        Ok(Action::requeue(acted.requeue))
    }

    /// Server-side apply of the status subresource.
    async fn patch_status(&self, status: MetaStoreStatus) -> Result<(), Error> {
        let body = serde_json::json!({
            "apiVersion": MetaStore::api_version(&()),
            "kind": MetaStore::kind(&()),
            "status": status,
        });
        self.api::<MetaStore>()
            .patch_status(
                &self.name,
                &PatchParams::apply(OPERATOR_NAME).force(),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(())
    }
}

fn step_kind(step: &Step) -> &'static str {
    match step {
        Step::Bootstrap => "bootstrap",
        Step::ScaleStatefulSet { .. } => "scale_statefulset",
        Step::AddLearner { .. } => "add_learner",
        Step::Promote { .. } => "promote",
        Step::MoveLeader { .. } => "move_leader",
        Step::RemoveMember { .. } => "remove_member",
        Step::ReplaceLostMember { .. } => "replace_lost_member",
        Step::RestartMember { .. } => "restart_member",
        Step::Wait(_) => "wait",
        Step::Refuse(_) => "refuse",
        Step::QuorumLost(_) => "quorum_lost",
        Step::ForceNewCluster { .. } => "force_new_cluster",
        Step::NoMemberAnswers(_) => "no_member_answers",
        Step::RestoreLatestBackup => "restore_latest_backup",
        Step::Steady { .. } => "steady",
    }
}

/// Reason of the event for a membership step the executor carried out.
fn done_reason(step: &Step) -> &'static str {
    match step {
        Step::AddLearner { .. } => "MemberAdded",
        Step::Promote { .. } => "MemberPromoted",
        Step::MoveLeader { .. } => "LeaderMoved",
        Step::RemoveMember { .. } => "MemberRemoved",
        Step::ReplaceLostMember { .. } => "LostMemberRemoved",
        _ => "MembershipPolicyPushed",
    }
}

/// Highest pod ordinal [`ordinal_of`] looks for: a peer URL beyond it counts as a member that is
/// not one of the StatefulSet's pods.
const MAX_ORDINAL: i32 = 4 * MAX_REPLICAS;

/// Pod ordinal of a member from its peer URL.
pub(crate) fn ordinal_of(ms: &MetaStore, url: &str) -> Option<i32> {
    (0..=MAX_ORDINAL).find(|k| builders::peer_url(ms, *k) == url)
}

/// True while the StatefulSet controller has not rolled its pods onto the current template, or
/// some are not ready.
pub(crate) fn rolling_out(s: &StatefulSet) -> bool {
    let replicas = s.spec.replicas.unwrap_or(1);
    template_rolling_out(s)
        || s.status
            .as_ref()
            .is_none_or(|st| st.ready_replicas.unwrap_or(0) < replicas)
}

/// True while pods still run an older template than the StatefulSet's.
pub(crate) fn template_rolling_out(s: &StatefulSet) -> bool {
    let replicas = s.spec.replicas.unwrap_or(1);
    let Some(st) = s.status.as_ref() else {
        return true;
    };
    // Pods are updated OnDelete, so the current revision never catches up with the update
    // revision: the count of updated pods says when the roll is over.
    st.observed_generation.unwrap_or(0) < s.metadata.generation.unwrap_or(0)
        || st.updated_replicas.unwrap_or(0) < replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_step_waits_for_the_rollout() {
        let s: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo", "generation": 1},
            "spec": {"replicas": 1, "serviceName": "demo-peer", "selector": {},
                     "template": {}}
        }))
        .unwrap();
        assert_eq!(
            wait_for_rollout(Step::Steady { voters: 1 }, &s),
            Step::Wait("member pods are being updated".into())
        );
        assert_eq!(wait_for_rollout(Step::Bootstrap, &s), Step::Bootstrap);
    }

    #[test]
    fn rollouts_are_seen_until_the_controller_catches_up() {
        let mut s: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo", "generation": 3},
            "spec": {"replicas": 1, "serviceName": "demo-peer", "selector": {},
                     "template": {}},
            "status": {"replicas": 1, "observedGeneration": 2, "readyReplicas": 1,
                       "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"}
        }))
        .unwrap();
        assert!(rolling_out(&s), "template changed, not yet observed");
        s.status.as_mut().unwrap().observed_generation = Some(3);
        s.status.as_mut().unwrap().update_revision = Some("b".into());
        s.status.as_mut().unwrap().updated_replicas = Some(0);
        assert!(rolling_out(&s), "pods still on the old revision");
        // OnDelete: the current revision stays behind; the updated pods count.
        s.status.as_mut().unwrap().updated_replicas = Some(1);
        assert!(!rolling_out(&s));
        s.status.as_mut().unwrap().ready_replicas = Some(0);
        assert!(rolling_out(&s), "a pod not ready");
    }

    #[test]
    fn outdated_pods_are_those_off_the_update_revision_once_observed() {
        let ms = crate::testing::demo();
        let mut s: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo", "generation": 3},
            "spec": {"replicas": 3, "serviceName": "demo-peer", "selector": {},
                     "template": {"spec": {"containers": [{"name": "m", "image": "metastore-node:0.2.0"}]}}},
            "status": {"replicas": 3, "observedGeneration": 3, "updateRevision": "b"}
        }))
        .unwrap();
        let pod = |name: &str, rev: &str| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name,
                "labels": {"controller-revision-hash": rev}}}))
            .unwrap()
        };
        let pods = [
            pod("demo-0", "a"),
            pod("demo-1", "b"),
            pod("demo-2", "a"),
            pod("other-0", "a"),
        ];
        assert_eq!(outdated_ordinals(&ms, &s, &pods), vec![0, 2]);
        assert_eq!(template_tag(&s).as_deref(), Some("0.2.0"));
        // Not yet observed: the update revision is the previous template's.
        s.metadata.generation = Some(4);
        assert!(outdated_ordinals(&ms, &s, &pods).is_empty());
    }

    #[test]
    fn voter_labels_follow_the_members_roles() {
        let ms = crate::testing::demo();
        let pod = |name: &str, voter: Option<&str>| -> Pod {
            let labels: std::collections::BTreeMap<&str, &str> = voter
                .map(|v| ("metastore.io/voter", v))
                .into_iter()
                .collect();
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "labels": labels}}),
            )
            .unwrap()
        };
        let member = |k: i32, learner: bool| executor::MemberView {
            member: crate::planner::ObservedMember {
                id: k as u64 + 1,
                ordinal: Some(k),
                name: format!("demo-{k}"),
                is_learner: learner,
                healthy: true,
                answered: true,
                commit_index: 1,
                applied_index: 1,
            },
            client_url: None,
            leader: 1,
            version: None,
        };
        let view = ClusterView {
            members: Some(vec![member(0, false), member(1, false), member(2, true)]),
            ..Default::default()
        };
        let pods = [
            pod("demo-0", Some("true")),
            pod("demo-1", None),
            pod("demo-2", Some("true")),
            pod("demo-3", None),
        ];
        assert_eq!(
            voter_label_changes(&ms, &pods, &view),
            vec![
                ("demo-1".to_string(), "true"),
                ("demo-2".to_string(), "false")
            ]
        );
        assert!(voter_label_changes(&ms, &pods, &ClusterView::default()).is_empty());
    }

    #[test]
    fn retained_volumes_are_those_older_than_the_metastore() {
        let mut ms = crate::testing::demo();
        ms.metadata.creation_timestamp =
            Some(serde_json::from_value(serde_json::json!("2026-12-03T12:00:00Z")).unwrap());
        let claim = |name: &str, at: &str| -> PersistentVolumeClaim {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "creationTimestamp": at}}),
            )
            .unwrap()
        };
        let claims = [
            claim("data-demo-1", "2026-12-01T00:00:00Z"),
            claim("data-demo-0", "2026-12-01T00:00:00Z"),
            claim("data-demo-2", "2026-12-03T12:00:05Z"),
            claim("backups", "2026-12-01T00:00:00Z"),
        ];
        let old = retained_volumes(&ms, &claims);
        assert_eq!(old, ["data-demo-0", "data-demo-1"]);
        let why = retained_volumes_message(&ms, &old);
        assert!(
            why.contains("kubectl delete pvc data-demo-0 data-demo-1"),
            "{why}"
        );
    }

    #[test]
    fn no_growth_while_pods_take_a_new_template() {
        let add = Step::AddLearner { ordinal: 1 };
        let wait = Step::Wait("member pods are being updated".into());
        assert_eq!(hold_growth_during_rollout(add.clone(), true), wait);
        assert_eq!(hold_growth_during_rollout(add.clone(), false), add);
        let start = Step::ScaleStatefulSet {
            replicas: 2,
            reason: "start learner 1".into(),
        };
        assert_eq!(hold_growth_during_rollout(start, true), wait);
        // Shrinking and membership steps that finish a change go on.
        let shrink = Step::ScaleStatefulSet {
            replicas: 1,
            reason: "member 2 was removed".into(),
        };
        assert_eq!(hold_growth_during_rollout(shrink.clone(), true), shrink);
        let promote = Step::Promote {
            id: 1,
            voters_after: 2,
        };
        assert_eq!(hold_growth_during_rollout(promote.clone(), true), promote);
    }

    #[test]
    fn ordinals_come_from_peer_urls() {
        let m = crate::testing::demo();
        assert_eq!(
            ordinal_of(&m, "http://demo-2.demo-peer.prod.svc:2380"),
            Some(2)
        );
        assert_eq!(
            ordinal_of(&m, "http://other-2.demo-peer.prod.svc:2380"),
            None
        );
    }
}
