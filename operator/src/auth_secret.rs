//! The `root` credentials of a cluster with `spec.auth`: the Secret the user named, or
//! `<name>-root`, made by the operator with a random password when missing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use rand::distributions::{Alphanumeric, DistString};

use crate::builders;
use crate::context::Error;
use crate::crd::MetaStore;

/// The user the operator acts as.
pub const ROOT_USER: &str = "root";
/// The key of the password in the Secret.
pub const PASSWORD_KEY: &str = "password";
/// Length of a generated password (alphanumeric: about 190 bits).
const PASSWORD_LEN: usize = 32;

/// The Secret holding root's password.
pub fn secret_name(ms: &MetaStore) -> Option<String> {
    let auth = ms.spec.auth.as_ref()?;
    Some(
        auth.root_secret
            .clone()
            .unwrap_or_else(|| format!("{}-root", ms.name_any())),
    )
}

/// `(user, password)` the operator authenticates with, when `spec.auth` is given (on or off:
/// turning it off takes root too). Makes the default Secret when it is missing.
pub async fn ensure(
    ms: &MetaStore,
    client: &kube::Client,
) -> Result<Option<(String, String)>, Error> {
    let Some(name) = secret_name(ms) else {
        return Ok(None);
    };
    let ns = ms
        .namespace()
        .ok_or_else(|| Error::NoNamespace(ms.name_any()))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let user_named = ms
        .spec
        .auth
        .as_ref()
        .is_some_and(|a| a.root_secret.is_some());
    let secret = match secrets.get_opt(&name).await? {
        Some(s) => s,
        None if user_named => {
            return Err(Error::Auth(format!(
                "Secret {ns}/{name} (spec.auth.rootSecret) not found"
            )))
        }
        None => {
            let password = Alphanumeric.sample_string(&mut rand::thread_rng(), PASSWORD_LEN);
            let secret = Secret {
                metadata: builders::meta(ms, name.clone()),
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([
                    (
                        "username".to_string(),
                        ByteString(ROOT_USER.as_bytes().to_vec()),
                    ),
                    (PASSWORD_KEY.to_string(), ByteString(password.into_bytes())),
                ])),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(s) => s,
                // Made by a reconcile that raced this one: use it.
                Err(kube::Error::Api(e)) if e.code == 409 => secrets.get(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let password = crate::tls_secrets::field(&secret, PASSWORD_KEY)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            Error::Auth(format!(
                "Secret {ns}/{name} has no {PASSWORD_KEY:?} (root's password)"
            ))
        })?;
    Ok(Some((ROOT_USER.to_string(), password)))
}
