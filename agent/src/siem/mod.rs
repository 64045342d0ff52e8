//! SIEM connectors (being written).
