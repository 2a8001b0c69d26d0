//! The arithmetic of LLM cost and caps: model prices, what was spent, and
//! the budgets a workflow and its roles must stay within.
//!
//! Its own module because both the `LlmProvider` port (a call's spend) and
//! the workflow state (usage per role) count in [`Spend`]: neither owns the
//! other's types. It is pure: no I/O, no clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Input and output prices of one model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Price of a million prompt tokens.
    pub input_per_mtok: f64,
    /// Price of a million completion tokens.
    pub output_per_mtok: f64,
}

/// Prices per model name. A model without a price costs nothing (local
/// servers); lookups try the exact name, then `provider/model`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable(pub BTreeMap<String, ModelPrice>);

impl PriceTable {
    /// The price of `model` as served by `provider`, if configured: the
    /// key `provider/model`, else `model`, else the longest key that
    /// `model` extends by a dated or versioned suffix (`gpt-4o` prices
    /// `gpt-4o-2024-08-06`, but not `gpt-4o-mini`).
    pub fn price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        if let Some(p) = self
            .0
            .get(&format!("{provider}/{model}"))
            .or_else(|| self.0.get(model))
        {
            return Some(*p);
        }
        let versioned = |key: &str| {
            model.strip_prefix(key).is_some_and(|rest| {
                let mut chars = rest.chars();
                matches!(chars.next(), Some('-' | '@' | ':'))
                    && chars.next().is_some_and(|c| c.is_ascii_digit())
            })
        };
        self.0
            .iter()
            .filter(|(key, _)| versioned(key))
            .max_by_key(|(key, _)| key.len())
            .map(|(_, price)| *price)
    }

    /// Cost in US dollars of the given token counts (0 when unpriced).
    pub fn cost(&self, provider: &str, model: &str, prompt: u64, completion: u64) -> f64 {
        self.price(provider, model)
            .map(|p| {
                (prompt as f64 * p.input_per_mtok + completion as f64 * p.output_per_mtok) / 1e6
            })
            .unwrap_or(0.0)
    }
}

/// A cost and token cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limit {
    /// At most this many US dollars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// At most this many tokens (prompt + completion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

impl Limit {
    /// True when neither cap is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_cost_usd.is_none() && self.max_tokens.is_none()
    }

    /// Overlays `other`'s set caps on this one.
    pub fn merged(self, other: Limit) -> Limit {
        Limit {
            max_cost_usd: other.max_cost_usd.or(self.max_cost_usd),
            max_tokens: other.max_tokens.or(self.max_tokens),
        }
    }
}

/// Budgets of one workflow: a cap on the whole workflow and caps per agent
/// role. Spend counts every LLM call, including those of failed attempts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Cap on the whole workflow.
    #[serde(flatten)]
    pub workflow: Limit,
    /// Caps per role (`developer`, `technical_writer`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, Limit>,
}

/// What has been spent so far (or what a call is expected to spend).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    /// US dollars (a cached or unpriced call adds nothing).
    pub cost_usd: f64,
    /// Tokens (prompt + completion).
    pub tokens: u64,
}

impl Spend {
    /// The total and the per-role sums of `(role, spend)` pairs (a role may
    /// come more than once): what [`crate::LlmLedger::spend`] returns.
    pub fn by_role(
        parts: impl IntoIterator<Item = (String, Spend)>,
    ) -> (Spend, BTreeMap<String, Spend>) {
        let mut total = Spend::default();
        let mut roles = BTreeMap::<String, Spend>::new();
        for (role, s) in parts {
            total = total.plus(s);
            let entry = roles.entry(role).or_default();
            *entry = entry.plus(s);
        }
        (total, roles)
    }

    /// Both spends together.
    pub fn plus(self, other: Spend) -> Spend {
        Spend {
            cost_usd: self.cost_usd + other.cost_usd,
            tokens: self.tokens + other.tokens,
        }
    }
}

impl Budget {
    /// True when no cap is set anywhere.
    pub fn is_unlimited(&self) -> bool {
        self.workflow.is_unlimited() && self.roles.values().all(Limit::is_unlimited)
    }

    /// Overlays `other`'s set caps on this budget (role by role).
    pub fn merged(mut self, other: &Budget) -> Budget {
        self.workflow = self.workflow.merged(other.workflow);
        for (role, limit) in &other.roles {
            let entry = self.roles.entry(role.clone()).or_default();
            *entry = entry.merged(*limit);
        }
        self
    }

    /// Checks that spending `next` on top of `workflow_spent` (whole
    /// workflow) and `role_spent` (this role) stays within the caps.
    /// The error is a [`crate::Error::BudgetExceeded`] naming the role,
    /// the cap, what was spent and what the next call would add.
    pub fn check(
        &self,
        role: &str,
        workflow_spent: Spend,
        role_spent: Spend,
        next: Spend,
    ) -> crate::Result<()> {
        let scopes = [
            ("workflow", Some(&self.workflow), workflow_spent),
            ("role", self.roles.get(role), role_spent),
        ];
        for (scope, limit, spent) in scopes {
            let Some(limit) = limit else { continue };
            let after = spent.plus(next);
            let what = if scope == "workflow" {
                "workflow budget".to_string()
            } else {
                format!("budget of role {role}")
            };
            if let Some(cap) = limit.max_cost_usd {
                if after.cost_usd > cap {
                    return Err(crate::Error::BudgetExceeded(format!(
                        "{role}: the {what} of ${cap:.4} would be exceeded \
                         (spent ${:.4}, next call about ${:.4}); raise it and resume",
                        spent.cost_usd, next.cost_usd
                    )));
                }
            }
            if let Some(cap) = limit.max_tokens {
                if after.tokens > cap {
                    return Err(crate::Error::BudgetExceeded(format!(
                        "{role}: the {what} of {cap} tokens would be exceeded \
                         (spent {} tokens, next call about {}); raise it and resume",
                        spent.tokens, next.tokens
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_budgets() {
        let prices = PriceTable(
            [(
                "gpt-4o-mini".to_string(),
                ModelPrice {
                    input_per_mtok: 0.15,
                    output_per_mtok: 0.60,
                },
            )]
            .into(),
        );
        let cost = prices.cost("openai", "gpt-4o-mini", 1_000_000, 500_000);
        assert!((cost - 0.45).abs() < 1e-9, "{cost}");
        let dated = prices.cost("openai", "gpt-4o-mini-2024-07-18", 1_000_000, 0);
        assert!(
            (dated - 0.15).abs() < 1e-9,
            "a dated name has its model's price"
        );
        assert_eq!(prices.price("openai", "gpt-4o-mini-turbo"), None);
        assert_eq!(prices.cost("openai", "llama3", 10, 10), 0.0);

        let budget: Budget = serde_json::from_value(serde_json::json!({
            "max_cost_usd": 1.0,
            "roles": {"developer": {"max_tokens": 1000}}
        }))
        .unwrap();
        let spent = |c, t| Spend {
            cost_usd: c,
            tokens: t,
        };
        assert!(budget
            .check("qa", spent(0.5, 10), spent(0.1, 5), spent(0.4, 5))
            .is_ok());
        let err = budget
            .check("qa", spent(0.9, 10), spent(0.1, 5), spent(0.2, 5))
            .unwrap_err();
        assert_eq!(err.class(), crate::ErrorClass::BudgetExceeded);
        assert!(err.to_string().contains("$1.0000"), "{err}");
        let err = budget
            .check(
                "developer",
                spent(0.0, 900),
                spent(0.0, 900),
                spent(0.0, 200),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("role developer of 1000 tokens"),
            "{err}"
        );
        let raised = budget.merged(&Budget {
            workflow: Limit {
                max_cost_usd: Some(5.0),
                max_tokens: None,
            },
            roles: Default::default(),
        });
        assert_eq!(raised.workflow.max_cost_usd, Some(5.0));
        assert_eq!(raised.roles["developer"].max_tokens, Some(1000));
    }
}
