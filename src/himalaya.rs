//! Account discovery from the himalaya CLI configuration.
