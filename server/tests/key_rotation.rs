//! Agent key rotation, server side, against hostile proofs: every refusal
//! leaves the registered keys untouched and is audited; a valid proof
//! replaces them in one transaction; a repeated proof is confirmed again;
//! the confirmation is signed by the server key over the session's nonce.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use picket_proto::{B64, KeysRotated, RotateKeys};
use picket_server::db::entity::{agent, audit_event, tenant};
use picket_server::service::key_rotation::{Refusal, rotate};
use picket_shared::keys::{AgentKeys, ServerSigningKey, verify_signature};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, Set,
};
use uuid::Uuid;

async fn seed(db: &DatabaseConnection, tenant_id: Uuid, keys: &AgentKeys) -> agent::Model {
    agent::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        hostname: Set("h".into()),
        version: Set("0.1.0".into()),
        x25519_public: Set(keys.x25519_public().to_vec()),
        ed25519_public: Set(keys.ed25519_public().to_vec()),
        enrolled_at: Set(0),
        last_seen_at: Set(None),
        last_seq: Set(0),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap()
}

/// A proof of `new` for `agent_id` on a session with `nonce`, vouched for by `old`.
fn proof(nonce: &[u8; 32], agent_id: Uuid, old: &AgentKeys, new: &AgentKeys) -> RotateKeys {
    let (x, ed) = (new.x25519_public(), new.ed25519_public());
    let bytes = RotateKeys::signing_bytes(nonce, &agent_id, &x, &ed);
    RotateKeys {
        x25519_public: B64(x),
        ed25519_public: B64(ed),
        old_sig: B64(old.sign(&bytes)),
        new_sig: B64(new.sign(&bytes)),
    }
}

async fn registered(db: &DatabaseConnection, id: Uuid) -> agent::Model {
    agent::Entity::find_by_id(id)
        .one(db)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_proofs_are_refused_and_a_valid_one_replaces_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = picket_server::db::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("picket.db").display()
    ))
    .await
    .unwrap();
    let tenant_id = Uuid::now_v7();
    tenant::ActiveModel {
        id: Set(tenant_id),
        name: Set("t".into()),
        wrapped_key: Set(None),
        key_version: Set(1),
        min_approvers: Set(1),
        require_tests: Set(false),
        created_at: Set(0),
    }
    .insert(&db)
    .await
    .unwrap();
    let old = AgentKeys::generate().unwrap();
    let a = seed(&db, tenant_id, &old).await;
    let other = AgentKeys::generate().unwrap();
    seed(&db, tenant_id, &other).await;
    let server = ServerSigningKey::generate().unwrap();
    let nonce = [7u8; 32];
    let new = AgentKeys::generate().unwrap();

    let refused = |p: RotateKeys, n: [u8; 32]| {
        let (db, server) = (db.clone(), &server);
        async move { rotate(&db, server, a.id, &n, &p).await.unwrap().err() }
    };
    // Vouched for by a key that is not the agent's.
    let stranger = AgentKeys::generate().unwrap();
    assert_eq!(
        refused(proof(&nonce, a.id, &stranger, &new), nonce).await,
        Some(Refusal::BadOldSignature)
    );
    // No proof of possession of the new key.
    let mut p = proof(&nonce, a.id, &old, &new);
    p.new_sig = proof(&nonce, a.id, &old, &stranger).new_sig;
    assert_eq!(refused(p, nonce).await, Some(Refusal::BadNewSignature));
    // A proof recorded on another session (other nonce) is useless here.
    assert_eq!(
        refused(proof(&[8u8; 32], a.id, &old, &new), nonce).await,
        Some(Refusal::BadNewSignature)
    );
    // A low-order X25519 key would make jobs readable by anyone.
    let mut p = proof(&nonce, a.id, &old, &new);
    p.x25519_public = B64([0u8; 32]);
    let bytes = RotateKeys::signing_bytes(&nonce, &a.id, &[0u8; 32], &new.ed25519_public());
    p.old_sig = B64(old.sign(&bytes));
    p.new_sig = B64(new.sign(&bytes));
    assert_eq!(refused(p, nonce).await, Some(Refusal::BadX25519Key));
    // Another agent's keys.
    assert_eq!(
        refused(proof(&nonce, a.id, &old, &other), nonce).await,
        Some(Refusal::KeysInUse)
    );
    let row = registered(&db, a.id).await;
    assert_eq!(
        row.ed25519_public,
        old.ed25519_public().to_vec(),
        "unchanged"
    );
    assert!(row.keys_rotated_at.is_none());

    // A valid proof: stored, old keys kept as previous, confirmation signed.
    let k: KeysRotated = rotate(&db, &server, a.id, &nonce, &proof(&nonce, a.id, &old, &new))
        .await
        .unwrap()
        .unwrap();
    let confirmed =
        KeysRotated::signing_bytes(&nonce, &a.id, &new.x25519_public(), &new.ed25519_public());
    verify_signature(&server.verifying_key().to_bytes(), &confirmed, &k.proof.0).unwrap();
    let row = registered(&db, a.id).await;
    assert_eq!(row.ed25519_public, new.ed25519_public().to_vec());
    assert_eq!(row.x25519_public, new.x25519_public().to_vec());
    assert_eq!(
        row.previous_ed25519_public,
        Some(old.ed25519_public().to_vec())
    );
    assert!(row.keys_rotated_at.is_some());

    // The same proof again (confirmation lost): confirmed, nothing changes.
    let again = rotate(
        &db,
        &server,
        a.id,
        &[9u8; 32],
        &proof(&[9u8; 32], a.id, &old, &new),
    )
    .await
    .unwrap();
    assert!(again.is_ok());
    assert_eq!(
        registered(&db, a.id).await.ed25519_public,
        new.ed25519_public().to_vec()
    );
    // The superseded identity cannot vouch for yet another key.
    let third = AgentKeys::generate().unwrap();
    assert_eq!(
        refused(proof(&nonce, a.id, &old, &third), nonce).await,
        Some(Refusal::BadOldSignature)
    );

    let events = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("agent.rotate_keys"))
        .all(&db)
        .await
        .unwrap();
    let denied = events.iter().filter(|e| e.outcome == "denied").count();
    let success = events.iter().filter(|e| e.outcome == "success").count();
    assert_eq!((denied, success), (6, 1), "{events:?}");
}
