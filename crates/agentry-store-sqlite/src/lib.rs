//! SQLite Store adapter (sqlx, WAL) with embedded migrations.
