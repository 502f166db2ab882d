//! Who the session is and what it may do: the login ([`Session::login`],
//! `current_user`), privilege checks on every statement, and the role
//! statements (`CREATE ROLE`, `ALTER ROLE`, `DROP ROLE`, `GRANT`, `REVOKE`).
//!
//! What each statement needs (see [`thyme_table::roles`] for the model):
//! - a query: `SELECT` on every table, view or featureset it names
//!   (`pg_catalog` and `information_schema` are open to all);
//! - `INSERT` / `COPY FROM`: `INSERT` on the target, `SELECT` on what
//!   `INSERT ... SELECT` reads; `DELETE`: `DELETE` on the target and
//!   `SELECT` on the tables its `WHERE` reads;
//! - `CREATE TABLE` / `DROP TABLE`: `CREATE` on the database;
//! - role statements: a superuser (a role may change its own password).
//!
//! The needs are worked out once, when the statement is prepared, and
//! checked against the current grants each time it runs.

use std::collections::BTreeSet;

use sqlparser::ast::{
    Action, AlterRoleOperation, CreateRole, GrantObjects, Grantee, GranteeName, Password,
    Privileges, RoleOption,
};
use thyme_table::roles::{table_key, verifier_for, Principal, Privilege, Role, ALL_TABLES};

use super::*;

/// What a prepared statement needs from its role.
#[derive(Debug, Clone, Default)]
pub(super) struct Access {
    tables: Vec<(Privilege, String)>,
    /// Needs `CREATE` on the database (this statement).
    create: Option<&'static str>,
    /// Needs a superuser (this statement), unless it only changes the
    /// session role's own password.
    superuser: Option<&'static str>,
    own_password: Option<String>,
}

fn sql_str(e: &SqlExpr) -> Result<String> {
    if let SqlExpr::Value(v) = e {
        match &v.value {
            Value::SingleQuotedString(s) => return Ok(s.clone()),
            Value::DollarQuotedString(d) => return Ok(d.value.clone()),
            _ => {}
        }
    }
    Err(Error::InvalidParameter(
        "a password is a string literal".into(),
    ))
}

fn role_name(n: &ObjectName) -> Result<String> {
    match n.0.as_slice() {
        [p] => p
            .as_ident()
            .map(ident_name)
            .ok_or_else(|| Error::Syntax(format!("bad role name {n}"))),
        _ => Err(Error::Syntax(format!("bad role name {n}"))),
    }
}

fn grantee_names(grantees: &[Grantee]) -> Result<Vec<String>> {
    grantees
        .iter()
        .map(|g| match &g.name {
            Some(GranteeName::ObjectName(n)) => role_name(n),
            _ => Err(Error::Unsupported(format!("the grantee {g}"))),
        })
        .collect()
}

/// What a GRANT / REVOKE changes.
enum Grant {
    Tables(BTreeSet<Privilege>, Vec<String>),
    Create,
    /// `CONNECT`, `USAGE`, `TEMPORARY`: every role has them already.
    Nothing,
}

fn table_privileges(p: &Privileges) -> Result<BTreeSet<Privilege>> {
    match p {
        Privileges::All { .. } => Ok(Privilege::ALL.into_iter().collect()),
        Privileges::Actions(actions) => actions
            .iter()
            .map(|a| match a {
                Action::Select { columns: None } => Ok(Privilege::Select),
                Action::Insert { columns: None } => Ok(Privilege::Insert),
                Action::Delete => Ok(Privilege::Delete),
                other => Err(Error::Unsupported(format!(
                    "the table privilege {other} (Thyme has SELECT, INSERT and DELETE)"
                ))),
            })
            .collect(),
    }
}

fn database_grant(p: &Privileges) -> Result<Grant> {
    match p {
        Privileges::All { .. } => Ok(Grant::Create),
        Privileges::Actions(actions) => {
            let mut create = false;
            for a in actions {
                match a {
                    Action::Create { obj_type: None } => create = true,
                    Action::Connect | Action::Usage | Action::Temporary => {}
                    other => {
                        return Err(Error::Unsupported(format!(
                            "the privilege {other} on a database or schema (Thyme has CREATE)"
                        )))
                    }
                }
            }
            Ok(if create {
                Grant::Create
            } else {
                Grant::Nothing
            })
        }
    }
}

fn grant_of(privileges: &Privileges, objects: &Option<GrantObjects>) -> Result<Grant> {
    match objects {
        Some(GrantObjects::Tables(names)) | Some(GrantObjects::Views(names)) => {
            let names = names.iter().map(object_name).collect::<Result<Vec<_>>>()?;
            Ok(Grant::Tables(table_privileges(privileges)?, names))
        }
        Some(GrantObjects::AllTablesInSchema { schemas })
        | Some(GrantObjects::AllViewsInSchema { schemas }) => {
            for s in schemas {
                if role_name(s)? != schema::PUBLIC {
                    return Err(Error::UnknownTable(format!("schema {s}")));
                }
            }
            Ok(Grant::Tables(
                table_privileges(privileges)?,
                vec![ALL_TABLES.to_string()],
            ))
        }
        Some(GrantObjects::Databases(_)) | Some(GrantObjects::Schemas(_)) => {
            database_grant(privileges)
        }
        Some(other) => Err(Error::Unsupported(format!("GRANT ON {other}"))),
        None => Err(Error::Unsupported(
            "granting roles to roles (grant privileges instead)".into(),
        )),
    }
}

impl Session {
    /// Who the session is: after authentication, or trusted.
    /// `current_user` and `session_user` return the name.
    pub fn login(&mut self, principal: Principal) {
        let name = principal.name.clone();
        // Not `user`: a column of that name is common, and DataFusion would
        // resolve the bare word to the function first.
        for fname in ["session_user", "current_user", "current_role"] {
            let udf = crate::text_constant_udf(fname, name.clone());
            let _ = datafusion::execution::FunctionRegistry::register_udf(
                &mut self.state,
                Arc::new(udf),
            );
        }
        self.principal = principal;
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The tables (datasets, views, featuresets) a statement names, as
    /// written: not `pg_catalog` / `information_schema`, not table
    /// functions (`generate_series`), not CTEs.
    pub(super) fn tables_read(&self, stmt: &Statement) -> Result<Vec<String>> {
        let df = DfStatement::Statement(Box::new(stmt.clone()));
        Ok(self
            .state
            .resolve_table_references(&df)?
            .into_iter()
            .filter(|r| {
                !matches!(r.schema(), Some("pg_catalog" | "information_schema"))
                    && !self.state.table_functions().contains_key(r.table())
            })
            .map(|r| r.table().to_string())
            .collect())
    }

    /// The privileges a statement needs (computed at prepare).
    pub(super) fn access_of(&self, stmt: &Statement) -> Result<Access> {
        let mut a = Access::default();
        let reads = |a: &mut Access, s: &Statement, skip: Option<&str>| -> Result<()> {
            for t in self.tables_read(s)? {
                if Some(t.as_str()) != skip {
                    a.tables.push((Privilege::Select, t));
                }
            }
            Ok(())
        };
        match stmt {
            Statement::Query(_) | Statement::Explain { .. } => reads(&mut a, stmt, None)?,
            Statement::Insert(insert) => {
                if let sqlparser::ast::TableObject::TableName(n) = &insert.table {
                    a.tables.push((Privilege::Insert, object_name(n)?));
                }
                if let Some(src) = &insert.source {
                    reads(&mut a, &Statement::Query(src.clone()), None)?;
                }
            }
            Statement::Delete(_) => {
                let target = match &p_delete_target(stmt) {
                    Some(n) => object_name(n)?,
                    None => String::new(),
                };
                // As in Postgres, a WHERE clause reads the target too.
                let filtered = matches!(stmt, Statement::Delete(d) if d.selection.is_some());
                reads(&mut a, stmt, (!filtered).then_some(target.as_str()))?;
                a.tables.push((Privilege::Delete, target));
            }
            Statement::Copy {
                source: CopySource::Table { table_name, .. },
                ..
            } => a.tables.push((Privilege::Insert, object_name(table_name)?)),
            Statement::CreateTable(_) => a.create = Some("CREATE TABLE"),
            Statement::Drop {
                object_type: ObjectType::Table,
                ..
            } => a.create = Some("DROP TABLE"),
            Statement::Drop {
                object_type: ObjectType::Role | ObjectType::User,
                ..
            } => a.superuser = Some("DROP ROLE"),
            Statement::CreateRole(_) => a.superuser = Some("CREATE ROLE"),
            Statement::AlterRole { name, operation } => {
                a.superuser = Some("ALTER ROLE");
                if let AlterRoleOperation::WithOptions { options } = operation {
                    if options
                        .iter()
                        .all(|o| matches!(o, RoleOption::Password(Password::Password(_))))
                    {
                        a.own_password = Some(ident_name(name));
                    }
                }
            }
            Statement::Grant(_) => a.superuser = Some("GRANT"),
            Statement::Revoke(_) => a.superuser = Some("REVOKE"),
            _ => {}
        }
        Ok(a)
    }

    /// Check a prepared statement's needs against the current grants.
    pub(super) fn authorize(&self, p: &Prepared) -> Result<()> {
        let who = &self.principal;
        if who.trusted {
            return Ok(());
        }
        let roles = self.engine.roles();
        for (privilege, table) in &p.access.tables {
            roles.check(who, *privilege, table)?;
        }
        if let Some(what) = p.access.create {
            roles.check_create(who, what)?;
        }
        if let Some(what) = p.access.superuser {
            if p.access.own_password.as_deref() != Some(who.name.as_str()) {
                roles.check_superuser(who, what)?;
            }
        }
        Ok(())
    }

    pub(super) fn create_role(&mut self, cr: &CreateRole) -> Result<Output> {
        let password = match &cr.password {
            Some(Password::Password(e)) => Some(verifier_for(&sql_str(e)?)?),
            _ => None,
        };
        for n in &cr.names {
            let role = Role {
                name: role_name(n)?,
                superuser: cr.superuser.unwrap_or(false),
                login: cr.login.unwrap_or(false),
                password: password.clone(),
                ..Role::default()
            };
            self.engine.roles().create(role, cr.if_not_exists)?;
        }
        Ok(Output::Command {
            tag: "CREATE ROLE",
            rows: None,
        })
    }

    pub(super) fn alter_role(&mut self, name: &Ident, op: &AlterRoleOperation) -> Result<Output> {
        let name = ident_name(name);
        let AlterRoleOperation::WithOptions { options } = op else {
            return Err(Error::Unsupported(format!("ALTER ROLE {op}")));
        };
        enum Change {
            Login(bool),
            Superuser(bool),
            Password(Option<String>),
        }
        let mut changes = Vec::with_capacity(options.len());
        for o in options {
            changes.push(match o {
                RoleOption::Login(b) => Change::Login(*b),
                RoleOption::SuperUser(b) => Change::Superuser(*b),
                RoleOption::Password(Password::Password(e)) => {
                    Change::Password(Some(verifier_for(&sql_str(e)?)?))
                }
                RoleOption::Password(Password::NullPassword) => Change::Password(None),
                other => return Err(Error::Unsupported(format!("the role option {other}"))),
            });
        }
        self.engine.roles().alter(&name, |r| {
            for c in changes {
                match c {
                    Change::Login(b) => r.login = b,
                    Change::Superuser(b) => r.superuser = b,
                    Change::Password(p) => r.password = p,
                }
            }
            Ok(())
        })?;
        Ok(Output::Command {
            tag: "ALTER ROLE",
            rows: None,
        })
    }

    pub(super) fn drop_roles(&mut self, names: &[ObjectName], if_exists: bool) -> Result<Output> {
        for n in names {
            let name = role_name(n)?;
            if name == self.principal.name && !self.principal.trusted {
                return Err(Error::InvalidParameter(
                    "current user cannot be dropped".into(),
                ));
            }
            self.engine.roles().drop_role(&name, if_exists)?;
        }
        Ok(Output::Command {
            tag: "DROP ROLE",
            rows: None,
        })
    }

    pub(super) fn grant(
        &mut self,
        privileges: &Privileges,
        objects: &Option<GrantObjects>,
        grantees: &[Grantee],
        revoke: bool,
    ) -> Result<Output> {
        let tag = if revoke { "REVOKE" } else { "GRANT" };
        let grant = grant_of(privileges, objects)?;
        if let Grant::Tables(_, tables) = &grant {
            for t in tables {
                let exists = t == ALL_TABLES
                    || self
                        .state
                        .schema_for_ref(t.as_str())
                        .is_ok_and(|s| s.table_exist(t));
                if !exists {
                    return Err(Error::UnknownTable(t.clone()));
                }
            }
        }
        for name in grantee_names(grantees)? {
            self.engine.roles().alter(&name, |r| {
                match &grant {
                    Grant::Tables(privs, tables) => {
                        for t in tables {
                            let t = table_key(t);
                            let set = r.tables.entry(t.clone()).or_default();
                            if revoke {
                                set.retain(|p| !privs.contains(p));
                                if set.is_empty() {
                                    r.tables.remove(&t);
                                }
                            } else {
                                set.extend(privs.iter().copied());
                            }
                        }
                    }
                    Grant::Create => r.create = !revoke,
                    Grant::Nothing => {}
                }
                Ok(())
            })?;
        }
        Ok(Output::Command { tag, rows: None })
    }
}

fn p_delete_target(stmt: &Statement) -> Option<&ObjectName> {
    let Statement::Delete(d) = stmt else {
        return None;
    };
    let tables = match &d.from {
        sqlparser::ast::FromTable::WithFromKeyword(t)
        | sqlparser::ast::FromTable::WithoutKeyword(t) => t,
    };
    match tables.first().map(|t| &t.relation) {
        Some(TableFactor::Table { name, .. }) => Some(name),
        _ => None,
    }
}
