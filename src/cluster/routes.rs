//! Responsibility routing: for one report reason about one subject, who to
//! notify first and who after, each with a channel and its evidence.
//!
//! The order, for a reason:
//! 1. the routes the instance's verified operator declares for it (a route
//!    to another party's service only once that party confirmed, see
//!    [`super::declaration::confirm_delegation`]);
//! 2. the moderation service the operator delegates to (confirmed);
//! 3. the operator's contact for the reason's role (`security` for site
//!    security, `legal` for prohibited sales and trafficking,
//!    `dataProtection` for privacy, else `abuse`), falling back to `abuse`;
//! 4. an infrastructure abuse notice to the hosting PDS
//!    (`com.atproto.moderation.sendAbuseNotice`, proposal 0012), when its
//!    operator names the authorities it accepts notices from;
//! 5. the hosting operator as its `describeServer` names it;
//! 6. the registrant of the account's custom handle domain;
//! 7. the labelers linked to the instance whose service record takes the
//!    reason and the subject — never for the reasons proposal 0009 sends to
//!    moderation authorities only (child sexual abuse, grooming, other
//!    child safety, violent extremism).
//!
//! Reason codes are matched across the two vocabularies
//! (`com.atproto.moderation.defs#reasonSpam` and
//! `tools.ozone.report.defs#reasonMisleadingSpam` are one reason).

use serde::Serialize;

use crate::store::records::{contact_role, Contact, Declaration, DeclarationStatus, SecurityTxt};

const OZONE: &str = "tools.ozone.report.defs";
const ATPROTO: &str = "com.atproto.moderation.defs";

/// The reasons of `tools.ozone.report.defs` (proposal 0009).
pub const OZONE_REASONS: &[&str] = &[
    "reasonAppeal",
    "reasonOther",
    "reasonViolenceAnimal",
    "reasonViolenceThreats",
    "reasonViolenceGraphicContent",
    "reasonViolenceGlorification",
    "reasonViolenceExtremistContent",
    "reasonViolenceTrafficking",
    "reasonViolenceOther",
    "reasonSexualAbuseContent",
    "reasonSexualNCII",
    "reasonSexualDeepfake",
    "reasonSexualAnimal",
    "reasonSexualUnlabeled",
    "reasonSexualOther",
    "reasonChildSafetyCSAM",
    "reasonChildSafetyGroom",
    "reasonChildSafetyPrivacy",
    "reasonChildSafetyHarassment",
    "reasonChildSafetyOther",
    "reasonHarassmentTroll",
    "reasonHarassmentTargeted",
    "reasonHarassmentHateSpeech",
    "reasonHarassmentDoxxing",
    "reasonHarassmentOther",
    "reasonMisleadingBot",
    "reasonMisleadingImpersonation",
    "reasonMisleadingSpam",
    "reasonMisleadingScam",
    "reasonMisleadingElections",
    "reasonMisleadingOther",
    "reasonRuleSiteSecurity",
    "reasonRuleProhibitedSales",
    "reasonRuleBanEvasion",
    "reasonRuleOther",
    "reasonSelfHarmContent",
    "reasonSelfHarmED",
    "reasonSelfHarmStunts",
    "reasonSelfHarmSubstances",
    "reasonSelfHarmOther",
];

/// `com.atproto.moderation.defs` reasons and the `tools.ozone` reason each
/// maps to (proposal 0009, "Backwards Compatibility").
const EQUIVALENT: &[(&str, &str)] = &[
    ("reasonSpam", "reasonMisleadingSpam"),
    ("reasonViolation", "reasonRuleOther"),
    ("reasonMisleading", "reasonMisleadingOther"),
    ("reasonSexual", "reasonSexualUnlabeled"),
    ("reasonRude", "reasonHarassmentOther"),
    ("reasonOther", "reasonOther"),
    ("reasonAppeal", "reasonAppeal"),
];

/// Reasons sent to moderation authorities only (proposal 0009).
const AUTHORITIES_ONLY: &[&str] =
    &["reasonChildSafetyCSAM", "reasonChildSafetyGroom", "reasonChildSafetyOther", "reasonViolenceExtremistContent"];

/// A report reason, in canonical form (`tools.ozone.report.defs#…` where
/// one exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    /// Reads a reason code: a full code (`nsid#name`), or a name of either
    /// vocabulary (`reasonMisleadingSpam`, `reasonSpam`).
    pub fn parse(s: &str) -> Result<Reason, String> {
        let name = match s.split_once('#') {
            Some((nsid, name)) if nsid == OZONE || nsid == ATPROTO => name,
            Some(_) if super::declaration::is_reason_type(s) => return Ok(Reason(s.to_owned())),
            Some(_) => return Err(format!("{s:?} is not a reason code (nsid#name)")),
            None => s,
        };
        let atproto = EQUIVALENT.iter().find(|(a, _)| *a == name).map(|(_, o)| *o);
        match (OZONE_REASONS.contains(&name), atproto) {
            (true, _) => Ok(Reason(format!("{OZONE}#{name}"))),
            (false, Some(o)) => Ok(Reason(format!("{OZONE}#{o}"))),
            (false, None) => {
                Err(format!("{s:?} is not a known reason (one of {OZONE}'s, or {ATPROTO}'s; see proposal 0009)"))
            }
        }
    }

    pub fn code(&self) -> &str {
        &self.0
    }

    fn name(&self) -> &str {
        self.0.split_once('#').map_or(&self.0, |(_, n)| n)
    }

    /// Whether a declared reason code is this reason.
    fn matches(&self, declared: &str) -> bool {
        Reason::parse(declared).is_ok_and(|d| d == *self)
    }

    /// Proposal 0009: reports of this reason go to moderation authorities
    /// only, never to community labelers.
    pub fn authorities_only(&self) -> bool {
        self.0.starts_with(OZONE) && AUTHORITIES_ONLY.contains(&self.name())
    }

    /// The infrastructure abuse type (proposal 0012: media, legal, spam,
    /// extremist, other).
    pub fn abuse_type(&self) -> &'static str {
        let n = self.name();
        match n {
            "reasonChildSafetyCSAM" | "reasonChildSafetyGroom" | "reasonSexualNCII" | "reasonSexualAbuseContent" => {
                "media"
            }
            "reasonViolenceExtremistContent" => "extremist",
            "reasonMisleadingSpam" | "reasonMisleadingBot" | "reasonMisleadingScam" => "spam",
            "reasonRuleProhibitedSales" | "reasonViolenceTrafficking" => "legal",
            _ => "other",
        }
    }

    /// The contact role that answers for it first.
    fn role(&self) -> &'static str {
        match self.name() {
            "reasonRuleSiteSecurity" => "security",
            "reasonRuleProhibitedSales" | "reasonViolenceTrafficking" => "legal",
            "reasonChildSafetyPrivacy" | "reasonHarassmentDoxxing" => "dataProtection",
            _ => "abuse",
        }
    }
}

/// What is reported: an account, or one of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Account,
    Record { collection: String },
}

impl Subject {
    fn kind(&self) -> &'static str {
        match self {
            Subject::Account => "account",
            Subject::Record { .. } => "record",
        }
    }
    fn collection(&self) -> Option<&str> {
        match self {
            Subject::Account => None,
            Subject::Record { collection } => Some(collection),
        }
    }
}

/// The hosting PDS as its `describeServer` shows it.
#[derive(Debug, Clone, Default)]
pub struct Hosting {
    pub endpoint: String,
    pub contact_email: Option<String>,
    pub checked_at_ms: Option<i64>,
    /// Its `security.txt`, when one was found, and when it was fetched.
    pub security_txt: Option<(SecurityTxt, i64)>,
}

/// The instance's verified operator.
#[derive(Debug, Clone)]
pub struct Operator<'a> {
    pub did: &'a str,
    pub decl: &'a Declaration,
    pub status: Option<&'a DeclarationStatus>,
    /// Whether the hosting PDS is one the operator's declaration verified.
    pub runs_host: bool,
    pub checked_at_ms: Option<i64>,
}

/// A labeler linked to the instance, with its service record's scope
/// (`None`: not published, every reason or subject).
#[derive(Debug, Clone, Default)]
pub struct Labeler {
    pub did: String,
    pub reason_types: Option<Vec<String>>,
    pub subject_types: Option<Vec<String>>,
    pub subject_collections: Option<Vec<String>>,
    pub checked_at_ms: Option<i64>,
}

/// Everyone who may answer for the subject.
#[derive(Debug, Clone, Default)]
pub struct Parties<'a> {
    pub hosting: Option<Hosting>,
    pub operator: Option<Operator<'a>>,
    /// The custom handle domain: `(domain, handle, checked at)`.
    pub registrant: Option<(String, String, Option<i64>)>,
    /// The handle domain's `security.txt`, when one was found.
    pub registrant_security_txt: Option<(SecurityTxt, i64)>,
    /// Now (ms), for `security.txt` expiry.
    pub now_ms: i64,
    pub labelers: Vec<Labeler>,
}

/// One party to notify, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `operator_route`, `moderation_service`, `operator_contact`,
    /// `abuse_notice`, `hosting`, `registrant`, `labeler`.
    pub party: &'static str,
    /// The party: a DID, a host, or a domain.
    pub who: String,
    /// `email`, `url`, `account`, `service` (a `did#fragment` to send
    /// `com.atproto.moderation.createReport` to), `xrpc` (an endpoint to
    /// POST to), `rdap` (look the domain's registrant up), `none`.
    pub channel: &'static str,
    pub address: String,
    /// The contact's role, when one was declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// The operator asked that it not be displayed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub confidential: bool,
    /// Why this party answers for it, in words.
    pub evidence: String,
    /// When what it rests on was last checked (ms).
    #[serde(skip)]
    pub checked_at_ms: Option<i64>,
}

fn contact_routes(c: &Contact, party: &'static str, who: &str, evidence: &str, at: Option<i64>) -> Vec<Route> {
    let role = contact_role(&c.role);
    [("email", &c.email), ("url", &c.url), ("account", &c.account)]
        .into_iter()
        .filter_map(|(channel, v)| v.as_ref().map(|v| (channel, v)))
        .map(|(channel, v)| Route {
            party,
            who: who.to_owned(),
            channel,
            address: v.clone(),
            role,
            confidential: c.confidential,
            evidence: evidence.to_owned(),
            checked_at_ms: at,
        })
        .collect()
}

/// The contacts of a `security.txt` not past its `Expires`, as routes.
fn security_txt_routes(party: &'static str, who: &str, txt: &(SecurityTxt, i64), now_ms: i64) -> Vec<Route> {
    let (t, at) = txt;
    if t.expired(now_ms) {
        return Vec::new();
    }
    let expires = t.expires.as_deref().unwrap_or("no Expires");
    t.contacts
        .iter()
        .filter_map(|c| {
            let (channel, address) = match crate::hosts::securitytxt::mailto(c) {
                Some(a) => ("email", a.to_owned()),
                None if c.starts_with("https://") => ("url", c.clone()),
                None => return None,
            };
            Some(Route {
                party,
                who: who.to_owned(),
                channel,
                address,
                role: Some("security"),
                confidential: false,
                evidence: format!("{} (RFC 9116, expires {expires})", t.url),
                checked_at_ms: Some(*at),
            })
        })
        .collect()
}

fn covers(declared: &[String], reason: Option<&Reason>, subject: &Subject, types: &[String], colls: &[String]) -> bool {
    let reason_ok = declared.is_empty() || reason.is_some_and(|r| declared.iter().any(|d| r.matches(d)));
    let type_ok = types.is_empty() || types.iter().any(|t| t == subject.kind());
    let coll_ok = colls.is_empty() || subject.collection().is_none_or(|c| colls.iter().any(|x| x == c));
    reason_ok && type_ok && coll_ok
}

/// The parties to notify for `reason` (`None`: a reason no route names),
/// first one first, without repeats.
pub fn routes(reason: Option<&Reason>, subject: &Subject, p: &Parties<'_>) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    let confirmed =
        |s: &str| p.operator.as_ref().and_then(|o| o.status).is_some_and(|st| st.confirmed.iter().any(|(c, _)| c == s));
    if let Some(op) = &p.operator {
        let at = op.checked_at_ms;
        let contacts = op.decl.all_contacts();
        let by_role =
            |role: &str| -> Vec<&Contact> { contacts.iter().filter(|c| contact_role(&c.role) == Some(role)).collect() };
        // 1. its declared routes
        for r in &op.decl.routes {
            if !covers(&r.reason_types, reason, subject, &r.subject_types, &r.subject_collections) {
                continue;
            }
            let why = "a route in the operator's verified declaration";
            if let Some(role) = r.contact.as_deref().and_then(contact_role) {
                for c in by_role(role) {
                    out.extend(contact_routes(c, "operator_route", op.did, why, at));
                }
            } else if let Some(s) = r.service.as_deref().filter(|s| confirmed(s)) {
                out.push(Route {
                    party: "operator_route",
                    who: s.split('#').next().unwrap_or_default().to_owned(),
                    channel: "service",
                    address: s.to_owned(),
                    role: None,
                    confidential: false,
                    evidence: format!("{why}; the service confirmed it (moderatesFor)"),
                    checked_at_ms: at,
                });
            }
        }
        // 2. the moderation service it delegates to
        if let Some(s) = op.decl.moderation_service.as_deref().filter(|s| confirmed(s)) {
            out.push(Route {
                party: "moderation_service",
                who: s.split('#').next().unwrap_or_default().to_owned(),
                channel: "service",
                address: s.to_owned(),
                role: None,
                confidential: false,
                evidence: "the operator delegates moderation to it, and its own declaration names the operator \
                           (moderatesFor)"
                    .into(),
                checked_at_ms: at,
            });
        }
        // 3. its contact for the reason's role
        let role = reason.map_or("abuse", Reason::role);
        let mut chosen = by_role(role);
        if chosen.is_empty() {
            chosen = by_role("abuse");
        }
        for c in chosen {
            let why = format!("the operator's verified declaration names it as its {} contact", c.role);
            out.extend(contact_routes(c, "operator_contact", op.did, &why, at));
        }
    }
    // 4. an abuse notice to the hosting PDS
    if let (Some(h), Some(op)) = (&p.hosting, &p.operator) {
        if op.runs_host && !op.decl.abuse_notice_authorities.is_empty() {
            let abuse_type = reason.map_or("other", Reason::abuse_type);
            out.push(Route {
                party: "abuse_notice",
                who: h.endpoint.clone(),
                channel: "xrpc",
                address: format!("{}/xrpc/com.atproto.moderation.sendAbuseNotice", h.endpoint),
                role: None,
                confidential: false,
                evidence: format!(
                    "the operator accepts infrastructure abuse notices (abuseType {abuse_type}) from {} only",
                    op.decl.abuse_notice_authorities.join(", ")
                ),
                checked_at_ms: op.checked_at_ms,
            });
        }
    }
    // 5. the hosting operator
    if let Some(h) = &p.hosting {
        let (channel, address) = match &h.contact_email {
            Some(e) => ("email", e.clone()),
            None => ("none", String::new()),
        };
        out.push(Route {
            party: "hosting",
            who: h.endpoint.clone(),
            channel,
            address,
            role: Some("abuse"),
            confidential: false,
            evidence: "the PDS hosting the account (its DID document names it); the contact is its describeServer's"
                .into(),
            checked_at_ms: h.checked_at_ms,
        });
        if let Some(t) = &h.security_txt {
            out.extend(security_txt_routes("hosting", &h.endpoint, t, p.now_ms));
        }
    }
    // 6. the handle domain's registrant
    if let Some((domain, handle, at)) = &p.registrant {
        if let Some(t) = &p.registrant_security_txt {
            out.extend(security_txt_routes("registrant", domain, t, p.now_ms));
        }
        out.push(Route {
            party: "registrant",
            who: domain.clone(),
            channel: "rdap",
            address: domain.clone(),
            role: Some("legal"),
            confidential: false,
            evidence: format!("the account's handle {handle} is under this domain, verified both ways"),
            checked_at_ms: *at,
        });
    }
    // 7. labelers taking the reason and the subject
    if !reason.is_some_and(Reason::authorities_only) {
        for l in &p.labelers {
            let empty = Vec::new();
            let ok = covers(
                l.reason_types.as_ref().unwrap_or(&empty),
                reason,
                subject,
                l.subject_types.as_ref().unwrap_or(&empty),
                l.subject_collections.as_ref().unwrap_or(&empty),
            ) && !l.reason_types.as_ref().is_some_and(|r| r.is_empty());
            if ok {
                out.push(Route {
                    party: "labeler",
                    who: l.did.clone(),
                    channel: "service",
                    address: format!("{}#atproto_labeler", l.did),
                    role: None,
                    confidential: false,
                    evidence: "a labeler the instance's operator applies; its service record takes this report".into(),
                    checked_at_ms: l.checked_at_ms,
                });
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|r| seen.insert((r.channel, r.address.clone(), r.who.clone())));
    out
}

/// The reasons an operator's routes name, canonical, in order.
pub fn declared_reasons(p: &Parties<'_>) -> Vec<Reason> {
    let mut out: Vec<Reason> = Vec::new();
    let Some(op) = &p.operator else { return out };
    for r in op.decl.routes.iter().flat_map(|r| &r.reason_types) {
        if let Ok(r) = Reason::parse(r) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::ReportRoute;

    fn contact(role: &str, email: &str) -> Contact {
        Contact { role: role.into(), email: Some(email.into()), ..Contact::default() }
    }

    fn decl() -> Declaration {
        Declaration {
            name: "Example Co-op".into(),
            contacts: vec![contact("abuse", "abuse@coop.example"), contact("security", "security@coop.example")],
            moderation_service: Some("did:plc:modservice00000000000000#atproto_labeler".into()),
            abuse_notice_authorities: vec!["did:plc:authority0000000000000000".into()],
            routes: vec![ReportRoute {
                reason_types: vec!["tools.ozone.report.defs#reasonMisleadingSpam".into()],
                contact: Some("security".into()),
                ..ReportRoute::default()
            }],
            ..Declaration::default()
        }
    }

    fn parties<'a>(d: &'a Declaration, st: &'a DeclarationStatus) -> Parties<'a> {
        Parties {
            hosting: Some(Hosting {
                endpoint: "https://pds.coop.example".into(),
                contact_email: Some("admin@coop.example".into()),
                checked_at_ms: Some(1),
                security_txt: None,
            }),
            operator: Some(Operator {
                did: "did:plc:op",
                decl: d,
                status: Some(st),
                runs_host: true,
                checked_at_ms: Some(2),
            }),
            registrant: Some(("alice.example".into(), "alice.example".into(), Some(3))),
            registrant_security_txt: None,
            now_ms: 0,
            labelers: vec![
                Labeler { did: "did:plc:labelall".into(), ..Labeler::default() },
                Labeler {
                    did: "did:plc:labelspam".into(),
                    reason_types: Some(vec!["com.atproto.moderation.defs#reasonSpam".into()]),
                    ..Labeler::default()
                },
            ],
        }
    }

    fn order(rs: &[Route]) -> Vec<(&str, &str)> {
        rs.iter().map(|r| (r.party, r.address.as_str())).collect()
    }

    #[test]
    fn reasons_read_in_both_vocabularies() {
        let spam = Reason::parse("com.atproto.moderation.defs#reasonSpam").unwrap();
        assert_eq!(spam.code(), "tools.ozone.report.defs#reasonMisleadingSpam");
        assert_eq!(Reason::parse("reasonMisleadingSpam").unwrap(), spam);
        assert_eq!(Reason::parse("reasonSpam").unwrap(), spam);
        assert!(Reason::parse("reasonNope").is_err());
        assert!(Reason::parse("com.example.reasons#reasonCustom").is_ok(), "other vocabularies pass as written");
        assert!(Reason::parse("reasonChildSafetyCSAM").unwrap().authorities_only());
        assert_eq!(Reason::parse("reasonChildSafetyCSAM").unwrap().abuse_type(), "media");
    }

    #[test]
    fn a_declared_route_comes_first_then_delegation_contacts_notice_hosting_registrant_labelers() {
        let d = decl();
        let st = DeclarationStatus {
            confirmed: vec![("did:plc:modservice00000000000000#atproto_labeler".into(), "confirmed".into())],
            ..DeclarationStatus::default()
        };
        let p = parties(&d, &st);
        let spam = Reason::parse("reasonSpam").unwrap();
        let rs = routes(Some(&spam), &Subject::Account, &p);
        assert_eq!(
            order(&rs),
            [
                ("operator_route", "security@coop.example"),
                ("moderation_service", "did:plc:modservice00000000000000#atproto_labeler"),
                ("operator_contact", "abuse@coop.example"),
                ("abuse_notice", "https://pds.coop.example/xrpc/com.atproto.moderation.sendAbuseNotice"),
                ("hosting", "admin@coop.example"),
                ("registrant", "alice.example"),
                ("labeler", "did:plc:labelall#atproto_labeler"),
                ("labeler", "did:plc:labelspam#atproto_labeler"),
            ]
        );
        assert!(rs[3].evidence.contains("abuseType spam"));
        // another reason: no declared route; the spam-only labeler is left out
        let threats = Reason::parse("reasonViolenceThreats").unwrap();
        let rs = routes(Some(&threats), &Subject::Account, &p);
        assert_eq!(rs[0].party, "moderation_service");
        assert!(!rs.iter().any(|r| r.who == "did:plc:labelspam"));
        // site security goes to the security contact
        let sec = Reason::parse("reasonRuleSiteSecurity").unwrap();
        let rs = routes(Some(&sec), &Subject::Account, &p);
        assert_eq!(rs.iter().find(|r| r.party == "operator_contact").unwrap().address, "security@coop.example");
    }

    #[test]
    fn authority_only_reasons_skip_labelers_and_unconfirmed_services_count_for_nothing() {
        let d = decl();
        let st = DeclarationStatus::default(); // the delegation is not confirmed
        let p = parties(&d, &st);
        let csam = Reason::parse("reasonChildSafetyCSAM").unwrap();
        let rs = routes(Some(&csam), &Subject::Record { collection: "app.bsky.feed.post".into() }, &p);
        assert!(!rs.iter().any(|r| r.party == "labeler"), "{rs:?}");
        assert!(!rs.iter().any(|r| r.party == "moderation_service"), "not confirmed");
        assert_eq!(rs[0].party, "operator_contact");
        assert!(rs.iter().any(|r| r.party == "abuse_notice" && r.evidence.contains("abuseType media")));
    }

    #[test]
    fn security_txt_contacts_follow_the_hosting_contact_unless_expired() {
        let txt = SecurityTxt {
            url: "https://pds.example/.well-known/security.txt".into(),
            contacts: vec!["mailto:security@pds.example".into(), "https://pds.example/report".into(), "tel:+1".into()],
            expires: Some("2026-06-01T00:00:00Z".into()),
            expires_ms: Some(2_000),
            ..SecurityTxt::default()
        };
        let hosting = |now| Parties {
            hosting: Some(Hosting {
                endpoint: "https://pds.example".into(),
                contact_email: Some("admin@pds.example".into()),
                security_txt: Some((txt.clone(), 1)),
                ..Hosting::default()
            }),
            now_ms: now,
            ..Parties::default()
        };
        let rs = routes(None, &Subject::Account, &hosting(1_000));
        assert_eq!(
            order(&rs),
            [
                ("hosting", "admin@pds.example"),
                ("hosting", "security@pds.example"),
                ("hosting", "https://pds.example/report")
            ]
        );
        assert!(rs[1].evidence.contains("RFC 9116"));
        let rs = routes(None, &Subject::Account, &hosting(3_000));
        assert_eq!(order(&rs), [("hosting", "admin@pds.example")], "an expired security.txt is not used");
    }

    #[test]
    fn without_an_operator_the_hosting_pds_answers_first() {
        let p = Parties {
            hosting: Some(Hosting { endpoint: "https://pds.example".into(), ..Hosting::default() }),
            ..Parties::default()
        };
        let rs = routes(None, &Subject::Account, &p);
        assert_eq!(order(&rs), [("hosting", "")]);
        assert_eq!(rs[0].channel, "none");
    }

    #[test]
    fn first_version_contacts_read_as_abuse_contacts() {
        let d = Declaration {
            abuse_contact: Some("https://coop.example/abuse".into()),
            moderation_contact: Some("mod@coop.example".into()),
            ..Declaration::default()
        };
        let st = DeclarationStatus::default();
        let p = Parties {
            operator: Some(Operator {
                did: "did:plc:op",
                decl: &d,
                status: Some(&st),
                runs_host: true,
                checked_at_ms: None,
            }),
            ..Parties::default()
        };
        let rs = routes(None, &Subject::Account, &p);
        assert_eq!(
            rs.iter().map(|r| (r.channel, r.address.as_str())).collect::<Vec<_>>(),
            [("url", "https://coop.example/abuse"), ("email", "mod@coop.example")]
        );
    }
}
