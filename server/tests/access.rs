//! The access model against the real server (port 0): registration modes,
//! invitations, password policy and change, sessions (cookie flags, idle and
//! absolute timeouts, listing, revocation, logout, rotation on role change),
//! login throttling (per account, per IP, trusted proxies), API keys (scopes,
//! shown once, hashed, revocable, expiring, last use, audit attribution,
//! separation of duties), CSRF and security headers.
//!
//! Timeouts and expiries are reached by moving the stored timestamps back in
//! the database, never by waiting.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{PASSWORD, app};

#[tokio::test]
async fn self_hosted_claim_closes_registration_and_invitations_admit_people() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    // Registration is closed for good: a second claim, and sign-up.
    let a = s
        .post(
            "/v1/auth/claim",
            None,
            json!({ "tenant_name": "Evil", "email": "eve@evil.test", "password": PASSWORD }),
        )
        .await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (409, Some("already_claimed"))
    );
    let a = s
        .post(
            "/v1/auth/signup",
            None,
            json!({ "tenant_name": "Evil", "email": "eve@evil.test", "password": PASSWORD }),
        )
        .await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (403, Some("registration_closed"))
    );

    // An invitation as a flagged viewer.
    let inv = s
        .post(
            "/v1/invitations",
            Some(&admin),
            json!({ "email": "Vic@Acme.test", "role": "viewer", "approver": true }),
        )
        .await;
    assert_eq!(inv.status, 201, "{}", inv.text);
    let token = inv.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("pi_"));
    // Only its hash is stored; the list never shows it.
    let list = s.get("/v1/invitations", &admin).await;
    assert!(!list.text.contains(&token));
    assert_eq!(list.body[0]["status"], "pending");
    let stored = s.scalar("SELECT token_hash FROM invitations").await;
    assert!(!stored[0].contains(&token));

    // Accepting needs a policy-conforming password.
    for (pw, why) in [("short", "at least 12"), ("Password123!", "too common")] {
        let a = s
            .post(
                "/v1/auth/accept-invitation",
                None,
                json!({ "token": token, "password": pw }),
            )
            .await;
        assert_eq!(a.status, 400, "{}", a.text);
        assert_eq!(a.body["error"]["code"], "weak_password");
        assert!(
            a.body["error"]["message"].as_str().unwrap().contains(why),
            "{}",
            a.text
        );
    }
    let a = s
        .post(
            "/v1/auth/accept-invitation",
            None,
            json!({ "token": token, "password": "vic-chooses-a-long-phrase" }),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["user"]["role"], "viewer");
    assert_eq!(a.body["user"]["approver"], true);
    assert_eq!(a.body["user"]["email"], "vic@acme.test");
    let vic = a.body["token"].as_str().unwrap().to_owned();
    assert_eq!(s.get("/v1/me", &vic).await.status, 200);
    // Single use.
    let again = s
        .post(
            "/v1/auth/accept-invitation",
            None,
            json!({ "token": token, "password": "another-long-phrase-1" }),
        )
        .await;
    assert_eq!(
        (again.status, again.body["error"]["code"].as_str()),
        (401, Some("invitation_invalid"))
    );
    assert_eq!(
        s.get("/v1/invitations", &admin).await.body[0]["status"],
        "accepted"
    );

    // Expired and revoked invitations answer the same.
    let inv2 = s
        .post(
            "/v1/invitations",
            Some(&admin),
            json!({ "email": "old@acme.test", "role": "user" }),
        )
        .await;
    let t2 = inv2.body["token"].as_str().unwrap().to_owned();
    s.exec("UPDATE invitations SET expires_at = 1 WHERE email = 'old@acme.test'")
        .await;
    let a = s
        .post(
            "/v1/auth/accept-invitation",
            None,
            json!({ "token": t2, "password": "old-long-phrase-here" }),
        )
        .await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (401, Some("invitation_invalid"))
    );
    let inv3 = s
        .post(
            "/v1/invitations",
            Some(&admin),
            json!({ "email": "rev@acme.test", "role": "user" }),
        )
        .await;
    let id3 = inv3.body["id"].as_str().unwrap();
    assert_eq!(
        s.post(
            &format!("/v1/invitations/{id3}/revoke"),
            Some(&admin),
            json!({})
        )
        .await
        .status,
        204
    );
    let a = s
        .post(
            "/v1/auth/accept-invitation",
            None,
            json!({ "token": inv3.body["token"], "password": "rev-long-phrase-here" }),
        )
        .await;
    assert_eq!(a.status, 401);
    // The email got an account meanwhile: 409, and the invitation is not consumed.
    let inv4 = s
        .post(
            "/v1/invitations",
            Some(&admin),
            json!({ "email": "late@acme.test", "role": "user" }),
        )
        .await;
    s.user(&admin, "late@acme.test", "user", false).await;
    let a = s
        .post(
            "/v1/auth/accept-invitation",
            None,
            json!({ "token": inv4.body["token"], "password": "late-long-phrase-here" }),
        )
        .await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (409, Some("email_taken"))
    );
    let pending = s.get("/v1/invitations", &admin).await;
    assert!(
        pending.text.contains("\"status\":\"pending\""),
        "{}",
        pending.text
    );
    // Audited: create and accept, never the secret.
    let actions = s
        .scalar("SELECT action FROM audit_events WHERE action LIKE 'invitation.%' ORDER BY at, idx")
        .await;
    assert_eq!(
        actions,
        [
            "invitation.create",
            "invitation.accept",
            "invitation.create",
            "invitation.create",
            "invitation.revoke",
            "invitation.create"
        ]
    );
    let details = s
        .scalar("SELECT canonical FROM audit_events")
        .await
        .join("\n");
    assert!(!details.contains(&token) && !details.contains("vic-chooses"));
}

#[tokio::test]
async fn saas_sign_up_creates_a_tenant_each_time() {
    let s = app().with_env("PICKET_MODE", "saas").start().await;
    let a = s.register("/v1/auth/signup", "One", "one@one.test").await;
    let b = s.register("/v1/auth/signup", "Two", "two@two.test").await;
    let ta = s.get("/v1/me", &a).await.body["tenant_id"].clone();
    let tb = s.get("/v1/me", &b).await.body["tenant_id"].clone();
    assert_ne!(ta, tb);
    assert_eq!(s.get("/v1/me", &a).await.body["role"], "admin");
    // Each admin sees only their own users.
    let users = s.get("/v1/users", &a).await;
    assert_eq!(users.body.as_array().unwrap().len(), 1, "{}", users.text);
    let c = s
        .post(
            "/v1/auth/claim",
            None,
            json!({ "tenant_name": "X", "email": "x@x.test", "password": PASSWORD }),
        )
        .await;
    assert_eq!(
        (c.status, c.body["error"]["code"].as_str()),
        (403, Some("use_signup"))
    );
    let dup = s
        .post(
            "/v1/auth/signup",
            None,
            json!({ "tenant_name": "Dup", "email": "one@one.test", "password": PASSWORD }),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(
        s.scalar("SELECT COUNT(*) FROM tenants").await,
        ["2"],
        "a refused sign-up must not leave a tenant behind"
    );
}

#[tokio::test]
async fn sessions_have_cookie_flags_timeouts_and_can_be_listed_and_ended() {
    let s = app()
        .with_toml("[sessions]\nidle_timeout_secs = 600\nabsolute_timeout_secs = 7200\n")
        .start()
        .await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let (uid, _) = s.user(&admin, "dana@acme.test", "user", false).await;

    let l = s.login("dana@acme.test", PASSWORD).await;
    let cookie = l.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP: no Secure flag ({cookie})"
    );
    assert!(cookie.contains("Max-Age=7200"), "{cookie}");
    let t1 = l.body["token"].as_str().unwrap().to_owned();
    assert!(!l.text.contains("password_hash"));

    // A new session id on every login; a login presenting the old cookie ends it.
    let cookie_hdr = format!("picket_session={t1}");
    let l2 = s
        .send(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({ "email": "dana@acme.test", "password": PASSWORD })),
            &[("cookie", &cookie_hdr), ("sec-fetch-site", "same-origin")],
        )
        .await;
    let t2 = l2.body["token"].as_str().unwrap().to_owned();
    assert_ne!(t1, t2);
    assert_eq!(s.get("/v1/me", &t1).await.status, 401);
    let t3 = s.login("dana@acme.test", PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // List mine (the first login of `user()` + t2 + t3), then end one.
    let mine = s.get("/v1/me/sessions", &t2).await;
    let arr = mine.body.as_array().unwrap();
    assert_eq!(arr.len(), 3, "{}", mine.text);
    assert_eq!(arr.iter().filter(|x| x["current"] == true).count(), 1);
    let t3_id = picket_server::auth::secret_id(&t3);
    assert!(
        !mine.text.contains(&t3),
        "a session list never shows secrets"
    );
    let r = s
        .post(
            &format!("/v1/me/sessions/{t3_id}/revoke"),
            Some(&t2),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.get("/v1/me", &t3).await.status, 401);
    // Someone else's session: 404.
    let admin_sid = picket_server::auth::secret_id(&admin);
    let r = s
        .post(
            &format!("/v1/me/sessions/{admin_sid}/revoke"),
            Some(&t2),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(s.get("/v1/me", &admin).await.status, 200);

    // Idle timeout: unused for longer than idle_timeout_secs.
    let t2_id = picket_server::auth::secret_id(&t2);
    s.exec(&format!(
        "UPDATE sessions SET last_seen_at = last_seen_at - 601 WHERE id = '{t2_id}'"
    ))
    .await;
    assert_eq!(s.get("/v1/me", &t2).await.status, 401);
    // Absolute timeout: used recently but signed in too long ago.
    let t4 = s.login("dana@acme.test", PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let t4_id = picket_server::auth::secret_id(&t4);
    s.exec(&format!(
        "UPDATE sessions SET created_at = created_at - 7201 WHERE id = '{t4_id}'"
    ))
    .await;
    assert_eq!(s.get("/v1/me", &t4).await.status, 401);

    // Logout really ends it.
    let t5 = s.login("dana@acme.test", PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = s.post("/v1/auth/logout", Some(&t5), json!({})).await;
    assert_eq!(out.status, 204);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(s.get("/v1/me", &t5).await.status, 401);

    // An admin ends all of a user's sessions.
    let t6 = s.login("dana@acme.test", PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let t7 = s.login("dana@acme.test", PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = s
        .post(
            &format!("/v1/users/{uid}/sessions/revoke"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(e.status, 200, "{}", e.text);
    assert!(e.body["ended"].as_u64().unwrap() >= 2);
    assert_eq!(s.get("/v1/me", &t6).await.status, 401);
    assert_eq!(s.get("/v1/me", &t7).await.status, 401);

    // A role change ends the user's sessions; the next sign-in has the new role.
    let t8 = s.login("dana@acme.test", PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let rc = s
        .post(
            &format!("/v1/users/{uid}/role"),
            Some(&admin),
            json!({ "role": "viewer", "approver": true }),
        )
        .await;
    assert_eq!(rc.status, 200, "{}", rc.text);
    assert_eq!(s.get("/v1/me", &t8).await.status, 401);
    let t9 = s.login("dana@acme.test", PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = s.get("/v1/me", &t9).await;
    assert_eq!(
        (me.body["role"].as_str(), me.body["approver"].as_bool()),
        (Some("viewer"), Some(true))
    );
    assert_eq!(
        s.post("/v1/rules", Some(&t9), support::rule_body("x"))
            .await
            .status,
        403
    );
    // The admin cannot change their own role.
    let my_id = s.get("/v1/me", &admin).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let own = s
        .post(
            &format!("/v1/users/{my_id}/role"),
            Some(&admin),
            json!({ "role": "viewer" }),
        )
        .await;
    assert_eq!(own.status, 409);

    let actions = s
        .scalar("SELECT action FROM audit_events ORDER BY at, idx")
        .await;
    for a in [
        "auth.logout",
        "session.revoke",
        "user.sessions_end",
        "user.role_change",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn password_change_needs_the_current_one_and_ends_other_sessions() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let other = s.login("admin@acme.test", PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = s
        .post(
            "/v1/me/password",
            Some(&admin),
            json!({ "current_password": "not-the-password", "new_password": "a-brand-new-phrase" }),
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.body["error"]["code"].as_str()),
        (403, Some("wrong_password"))
    );
    let weak = s
        .post(
            "/v1/me/password",
            Some(&admin),
            json!({ "current_password": PASSWORD, "new_password": "iloveyou1234" }),
        )
        .await;
    assert_eq!(
        (weak.status, weak.body["error"]["code"].as_str()),
        (400, Some("weak_password"))
    );
    let ok = s
        .post(
            "/v1/me/password",
            Some(&admin),
            json!({ "current_password": PASSWORD, "new_password": "a-brand-new-phrase" }),
        )
        .await;
    assert_eq!(ok.status, 204, "{}", ok.text);
    assert!(ok.text.is_empty());
    assert_eq!(
        s.get("/v1/me", &admin).await.status,
        200,
        "the current session stays"
    );
    assert_eq!(
        s.get("/v1/me", &other).await.status,
        401,
        "other sessions end"
    );
    assert_eq!(s.login("admin@acme.test", PASSWORD).await.status, 401);
    assert_eq!(
        s.login("admin@acme.test", "a-brand-new-phrase")
            .await
            .status,
        200
    );
    // No password anywhere in the audit trail.
    let all = s
        .scalar("SELECT canonical FROM audit_events")
        .await
        .join("\n");
    for secret in [
        PASSWORD,
        "a-brand-new-phrase",
        "not-the-password",
        "iloveyou1234",
    ] {
        assert!(!all.contains(secret), "{secret} leaked into the audit log");
    }
    let outcomes = s
        .scalar(
            "SELECT outcome FROM audit_events WHERE action = 'user.password_change' ORDER BY at, idx",
        )
        .await;
    assert_eq!(outcomes, ["failure", "success"]);
}

#[tokio::test]
async fn login_is_throttled_per_account_and_per_ip_and_never_tells_who_exists() {
    let s = app()
        .with_toml("trusted_proxies = [\"127.0.0.1\"]\n[login]\naccount_failures_before_delay = 3\nip_failures_before_delay = 6\nmax_delay_secs = 600\n")
        .start()
        .await;
    let _admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let via = |ip: &'static str| [("x-forwarded-for", ip)];

    // Known account with a wrong password and unknown account: the same answer.
    let known = s
        .send(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({ "email": "admin@acme.test", "password": "wrong-password-x" })),
            &via("198.51.100.1"),
        )
        .await;
    let unknown = s
        .send(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({ "email": "nobody@acme.test", "password": "wrong-password-x" })),
            &via("198.51.100.2"),
        )
        .await;
    assert_eq!(known.status, 401);
    assert_eq!((known.status, &known.text), (unknown.status, &unknown.text));

    // Per account: the third failure locks the account, from any IP, known
    // or not; attempts while locked count too, so the lock grows (to 2^7 s
    // here, far longer than this test takes however slow the machine).
    for ip in ["198.51.100.3", "198.51.100.4"] {
        for email in ["admin@acme.test", "nobody@acme.test"] {
            for _ in 0..5 {
                let _ = s
                    .send(
                        "POST",
                        "/v1/auth/login",
                        None,
                        Some(json!({ "email": email, "password": "wrong-password-x" })),
                        &[("x-forwarded-for", ip)],
                    )
                    .await;
            }
        }
    }
    let k = s
        .send(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({ "email": "admin@acme.test", "password": PASSWORD })),
            &via("198.51.100.9"),
        )
        .await;
    let u = s
        .send(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({ "email": "nobody@acme.test", "password": PASSWORD })),
            &via("198.51.100.9"),
        )
        .await;
    assert_eq!(k.status, 429, "even the right password waits: {}", k.text);
    assert_eq!(k.body["error"]["code"], "too_many_attempts");
    assert_eq!(u.status, 429);
    let wait: u64 = k.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((60..=600).contains(&wait), "{wait}");
    assert_eq!(k.body, u.body, "locked answers are the same for both");

    // Per IP (trusted proxy: X-Forwarded-For counts): six failures from one IP
    // with different emails lock that IP (and more attempts lengthen the
    // lock), not the next one.
    for i in 0..14 {
        let _ = s
            .send(
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({ "email": format!("u{i}@acme.test"), "password": "wrong-password-x" })),
                &via("203.0.113.7"),
            )
            .await;
    }
    let blocked = s
        .send(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({ "email": "fresh@acme.test", "password": "wrong-password-x" })),
            &via("203.0.113.7"),
        )
        .await;
    assert_eq!(blocked.status, 429);
    let other = s
        .send(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({ "email": "fresh@acme.test", "password": "wrong-password-x" })),
            &via("203.0.113.8"),
        )
        .await;
    assert_eq!(other.status, 401);

    // Audited, with the client IP resolved through the proxy.
    let ips = s
        .scalar("SELECT client_ip FROM audit_events WHERE action = 'auth.login' AND outcome <> 'success'")
        .await;
    assert!(ips.iter().any(|ip| ip == "203.0.113.7"), "{ips:?}");
    assert!(ips.iter().all(|ip| ip != "127.0.0.1"), "{ips:?}");
    let denied = s
        .scalar(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'auth.login' AND outcome = 'denied'",
        )
        .await;
    assert!(denied[0].parse::<i64>().unwrap() >= 3);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let s = app()
        .with_toml("[login]\nip_failures_before_delay = 3\naccount_failures_before_delay = 100\n")
        .start()
        .await;
    for i in 0..10 {
        // A client rotating X-Forwarded-For does not escape the per-IP limit.
        let ip = format!("192.0.2.{i}");
        let _ = s
            .send(
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({ "email": format!("x{i}@a.test"), "password": "wrong-password-x" })),
                &[("x-forwarded-for", &ip)],
            )
            .await;
    }
    let a = s
        .send(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({ "email": "y@a.test", "password": "wrong-password-x" })),
            &[("x-forwarded-for", "192.0.2.200")],
        )
        .await;
    assert_eq!(a.status, 429, "{}", a.text);
    let ips = s
        .scalar("SELECT DISTINCT client_ip FROM audit_events WHERE action = 'auth.login'")
        .await;
    assert_eq!(ips, ["127.0.0.1"]);
}

#[tokio::test]
async fn api_keys_are_scoped_hashed_revocable_expiring_and_attributed() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let (kid, key) = s.api_key(&admin, &["rules:read", "rules:write"]).await;
    assert!(key.starts_with("pk_"));
    // Shown once: neither the list nor the database holds it.
    let list = s.get("/v1/api-keys", &admin).await;
    assert!(!list.text.contains(&key));
    assert_eq!(list.body[0]["scopes"], json!(["rules:read", "rules:write"]));
    let stored = s.scalar("SELECT secret_hash FROM api_keys").await;
    assert_eq!(stored[0], picket_server::auth::secret_id(&key));

    // Scopes: rules yes; agents, admin routes and account routes no.
    let r = s
        .post("/v1/rules", Some(&key), support::rule_body("By key"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rule_id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(s.get("/v1/rules", &key).await.status, 200);
    let no = s.get("/v1/agents", &key).await;
    assert_eq!(no.status, 403);
    assert!(
        no.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agents:read")
    );
    assert_eq!(s.get("/v1/users", &key).await.status, 403);
    assert_eq!(s.get("/v1/me", &key).await.status, 403);
    assert_eq!(
        s.post(
            "/v1/api-keys",
            Some(&key),
            json!({ "name": "x", "scopes": ["rules:read"] })
        )
        .await
        .status,
        403
    );

    // Attributed to the key in the audit log, with one throttled `api_key.use`.
    let actor = s
        .scalar(&format!("SELECT actor_type FROM audit_events WHERE action = 'rule.create' AND resource_id = '{rule_id}'"))
        .await;
    assert_eq!(actor, ["api_key"]);
    let actor_id = s
        .scalar(&format!("SELECT actor_id FROM audit_events WHERE action = 'rule.create' AND resource_id = '{rule_id}'"))
        .await;
    assert_eq!(actor_id, std::slice::from_ref(&kid));
    assert_eq!(
        s.scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'api_key.use'")
            .await,
        ["1"]
    );
    // last_used_at: not rewritten within a minute, rewritten after.
    s.exec("UPDATE api_keys SET last_used_at = last_used_at - 30")
        .await;
    let before = s.scalar("SELECT last_used_at FROM api_keys").await;
    assert_eq!(s.get("/v1/rules", &key).await.status, 200);
    assert_eq!(s.scalar("SELECT last_used_at FROM api_keys").await, before);
    s.exec("UPDATE api_keys SET last_used_at = last_used_at - 100")
        .await;
    assert_eq!(s.get("/v1/rules", &key).await.status, 200);
    let after: i64 = s.scalar("SELECT last_used_at FROM api_keys").await[0]
        .parse()
        .unwrap();
    assert!(after > before[0].parse::<i64>().unwrap());
    assert_eq!(
        s.scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'api_key.use'")
            .await,
        ["2"]
    );

    // A wrong secret with a valid prefix, a garbled key: 401.
    let forged = format!("{}AAAA", &key[..key.len() - 4]);
    assert_eq!(s.get("/v1/rules", &forged).await.status, 401);
    assert_eq!(s.get("/v1/rules", "pk_nonsense").await.status, 401);

    // Expired, then revoked: 401.
    s.exec("UPDATE api_keys SET expires_at = 1").await;
    assert_eq!(s.get("/v1/rules", &key).await.status, 401);
    s.exec("UPDATE api_keys SET expires_at = 99999999999").await;
    assert_eq!(s.get("/v1/rules", &key).await.status, 200);
    assert_eq!(
        s.post(
            &format!("/v1/api-keys/{kid}/revoke"),
            Some(&admin),
            json!({})
        )
        .await
        .status,
        204
    );
    assert_eq!(s.get("/v1/rules", &key).await.status, 401);
    let actions = s
        .scalar("SELECT action FROM audit_events WHERE resource_type = 'api_key' ORDER BY at, idx")
        .await;
    assert_eq!(actions.first().map(String::as_str), Some("api_key.create"));
    assert_eq!(actions.last().map(String::as_str), Some("api_key.revoke"));

    // Bad requests are precise.
    let bad = s
        .post(
            "/v1/api-keys",
            Some(&admin),
            json!({ "name": "x", "scopes": ["root"] }),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let bad = s
        .post(
            "/v1/api-keys",
            Some(&admin),
            json!({ "name": "x", "scopes": [] }),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );
}

#[tokio::test]
async fn a_key_cannot_approve_what_its_owner_requested() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let (_, dana) = s.user(&admin, "dana@acme.test", "user", false).await;
    let agent = s.agent(&admin).await;
    let conn = s.connection(&admin, &agent, "splunk-1").await;
    let (_, approve_key) = s
        .api_key(&admin, &["deployments:approve", "rules:read"])
        .await;

    // The admin (the key's owner) requests: the key is refused, as its owner would be.
    let rule = s.rule(&dana, "Dana's rule").await;
    let own = s.deployment(&admin, &rule, &conn).await;
    let a = s
        .post(
            &format!("/v1/deployments/{own}/approve"),
            Some(&approve_key),
            json!({}),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text);
    // The owner authored the version: refused too.
    let admin_rule = s.rule(&admin, "Admin's rule").await;
    let by_dana = s.deployment(&dana, &admin_rule, &conn).await;
    let a = s
        .post(
            &format!("/v1/deployments/{by_dana}/approve"),
            Some(&approve_key),
            json!({}),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text);
    // Someone else's request of someone else's version: the key approves, attributed to it.
    let ok = s.deployment(&dana, &rule, &conn).await;
    let a = s
        .post(
            &format!("/v1/deployments/{ok}/approve"),
            Some(&approve_key),
            json!({}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let actor = s
        .scalar(&format!("SELECT actor_type FROM audit_events WHERE action = 'deployment.approve' AND resource_id = '{ok}' AND outcome = 'success'"))
        .await;
    assert_eq!(actor, ["api_key"]);
    let denied = s
        .scalar("SELECT actor_type FROM audit_events WHERE action = 'deployment.approve' AND outcome = 'denied'")
        .await;
    assert_eq!(denied, ["api_key", "api_key"]);
}

#[tokio::test]
async fn csrf_applies_whenever_a_session_cookie_is_present() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let (_, key) = s.api_key(&admin, &["rules:write"]).await;
    let cookie = format!("picket_session={admin}");
    // Cookie, cross-site: refused.
    let a = s
        .send(
            "POST",
            "/v1/rules",
            None,
            Some(support::rule_body("a")),
            &[("cookie", &cookie), ("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(a.status, 403);
    // Cookie, wrong Origin: refused.
    let a = s
        .send(
            "POST",
            "/v1/rules",
            None,
            Some(support::rule_body("a")),
            &[("cookie", &cookie), ("origin", "https://evil.test")],
        )
        .await;
    assert_eq!(a.status, 403);
    // Cookie, same origin: fine.
    let a = s
        .send(
            "POST",
            "/v1/rules",
            None,
            Some(support::rule_body("a")),
            &[("cookie", &cookie), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    // API key without a cookie: exempt.
    let a = s
        .send(
            "POST",
            "/v1/rules",
            Some(&key),
            Some(support::rule_body("b")),
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    // API key alongside a session cookie: the CSRF rule applies.
    let a = s
        .send(
            "POST",
            "/v1/rules",
            Some(&key),
            Some(support::rule_body("c")),
            &[("cookie", &cookie), ("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(a.status, 403);
}

fn assert_security_headers(a: &support::Answer, what: &str) {
    let h = |n: &str| {
        a.headers
            .get(n)
            .unwrap_or_else(|| panic!("{what}: no {n}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let csp = h("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("style-src 'self'"),
        "{what}: {csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
}

#[tokio::test]
async fn security_headers_on_every_response_and_hsts_only_with_tls() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    for (a, what) in [
        (s.send("GET", "/", None, None, &[]).await, "landing page"),
        (s.send("GET", "/healthz", None, None, &[]).await, "health"),
        (s.send("GET", "/v1/nope", None, None, &[]).await, "404"),
        (s.send("GET", "/v1/rules", None, None, &[]).await, "401"),
        (
            s.send("DELETE", "/v1/rules", Some(&admin), None, &[]).await,
            "405",
        ),
        (
            s.send(
                "POST",
                "/v1/rules",
                Some(&admin),
                Some(json!({ "x": 1 })),
                &[],
            )
            .await,
            "400",
        ),
        (s.get("/v1/users", &admin).await, "200"),
    ] {
        assert_security_headers(&a, what);
        assert!(
            a.headers.get("strict-transport-security").is_none(),
            "{what}: HSTS over plain HTTP"
        );
    }

    let t = app().with_tls().start().await;
    let a = t.send("GET", "/healthz", None, None, &[]).await;
    assert_eq!(a.status, 200);
    assert_security_headers(&a, "tls health");
    assert!(
        a.headers["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    let e = t.send("GET", "/v1/rules", None, None, &[]).await;
    assert_eq!(e.status, 401);
    assert!(e.headers.get("strict-transport-security").is_some());
    // Over TLS the session cookie is Secure.
    let c = t
        .post(
            "/v1/auth/claim",
            None,
            json!({ "tenant_name": "T", "email": "t@t.test", "password": PASSWORD }),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.text);
    assert!(
        c.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}

#[tokio::test]
async fn credentials_are_write_only() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let agent = s.agent(&admin).await;
    let conn = s.connection(&admin, &agent, "splunk-1").await;
    s.exec("UPDATE siem_connections SET updated_at = updated_at - 10")
        .await;
    let show = s.get(&format!("/v1/connections/{conn}"), &admin).await;
    assert_eq!(show.body["credential"], "********");
    assert!(!show.text.contains("splunk-token-1"));
    let before = show.body["credential_updated_at"].clone();
    let ct_before = s
        .scalar("SELECT hex(credential) FROM siem_connections")
        .await;
    let up = s
        .send(
            "PUT",
            &format!("/v1/connections/{conn}/credential"),
            Some(&admin),
            Some(json!({ "token": "rotated-splunk-token" })),
            &[],
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.text);
    assert_eq!(up.body["credential"], "********");
    assert!(!up.text.contains("rotated-splunk-token"));
    assert_ne!(up.body["credential_updated_at"], before);
    let ct_after = s
        .scalar("SELECT hex(credential) FROM siem_connections")
        .await;
    assert_ne!(ct_before, ct_after);
    assert!(!ct_after[0].contains(&hex::encode("rotated-splunk-token").to_uppercase()));
    let empty = s
        .send(
            "PUT",
            &format!("/v1/connections/{conn}/credential"),
            Some(&admin),
            Some(json!({ "token": "" })),
            &[],
        )
        .await;
    assert_eq!(empty.status, 400);
    let (_, user) = s.user(&admin, "u@acme.test", "user", false).await;
    let no = s
        .send(
            "PUT",
            &format!("/v1/connections/{conn}/credential"),
            Some(&user),
            Some(json!({ "token": "x" })),
            &[],
        )
        .await;
    assert_eq!(no.status, 403);
    let details = s
        .scalar("SELECT canonical FROM audit_events")
        .await
        .join("\n");
    assert!(!details.contains("rotated-splunk-token") && !details.contains("splunk-token-1"));
    assert_eq!(
        s.scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'connection.credential_update'")
            .await,
        ["1"]
    );
}
