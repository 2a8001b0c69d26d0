//! Local Tracker, Wiki and git CodeHost adapters (the embedded defaults).
