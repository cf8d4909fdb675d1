//! Rendering: the plan as text, JSON or YAML ([`plan`]) and the graph as DOT or Mermaid
//! ([`graph`]), rollout events as bars, lines or JSON ([`progress`]) and the final table
//! ([`summary`]). Renderers take data and return strings; they never load, build or talk to a
//! cluster.

pub mod graph;
pub mod plan;
pub mod progress;
pub mod summary;
