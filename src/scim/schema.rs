//! The attribute characteristics (RFC 7643 §2, §7) of the resources the bridge serves:
//! User (§4.1), the Enterprise User extension (§4.3) and Group (§4.2), plus the common
//! attributes (§3.1), and the schema extensions an admin declares in the config file
//! (`[[scim.extensions]]`). Everything else in the core (validation, filters, PATCH,
//! projection, the /Schemas documents) reads these tables; nothing here does IO.
//!
//! The declared extensions are installed once, at start, before the first request
//! ([`install_extensions`]); from then on the set of schemas is as fixed as the
//! compiled-in tables, so every resolver reaches it through `ResourceType` without a
//! handle being threaded through each pure function.

use std::sync::OnceLock;

/// The data type of an attribute: the `type` characteristic (RFC 7643 §2.3, §7). It decides
/// how values are validated, coerced (see [`Leniency`]) and compared in filters (§2.3,
/// RFC 7644 §3.4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// A JSON string (RFC 7643 §2.3.1); compared case-insensitively unless `caseExact`.
    String,
    /// A JSON `true` or `false` (RFC 7643 §2.3.2); filters apply only `eq`, `ne` and
    /// `pr` to it.
    Boolean,
    /// A JSON number, integer or fractional (RFC 7643 §2.3.3).
    Decimal,
    /// A JSON number without a fractional part (RFC 7643 §2.3.4).
    Integer,
    /// An `xsd:dateTime` string such as `2008-01-23T04:56:22Z` (RFC 7643 §2.3.5); compared
    /// as an instant, not as text.
    DateTime,
    /// Base64-encoded bytes in a JSON string (RFC 7643 §2.3.6); compared case-exactly,
    /// never with the ordering operators (`gt`, `ge`, `lt`, `le`).
    Binary,
    /// A URI in a JSON string (RFC 7643 §2.3.7); which kinds it may name is in
    /// [`AttrDef::reference_types`].
    Reference,
    /// A JSON object of sub-attributes (RFC 7643 §2.3.8), listed in
    /// [`AttrDef::sub_attributes`]; complex attributes do not nest further.
    Complex,
}

impl AttrType {
    /// The type's name as RFC 7643 §2.3 spells it and /Schemas publishes it (`"string"`,
    /// `"dateTime"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Binary => "binary",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }
}

/// Whether and when a client may write an attribute: the `mutability` characteristic
/// (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Set by the bridge only (`id`, `meta`, a User's `groups`); a client's value is ignored
    /// on create and replace, and a PATCH naming it answers 400 `mutability`.
    ReadOnly,
    /// The client may set, replace and remove it (the default).
    ReadWrite,
    /// Set on create or when added, never changed afterwards (a Group member's `value`).
    Immutable,
    /// Accepted on write, never returned (`password`); `returned` is then `never`.
    WriteOnly,
}

impl Mutability {
    /// The characteristic's value as RFC 7643 §7 spells it (`"readOnly"`, `"readWrite"`,
    /// `"immutable"`, `"writeOnly"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// When an attribute appears in a response: the `returned` characteristic (RFC 7643 §7),
/// applied with the `attributes` / `excludedAttributes` parameters (RFC 7644 §3.4.2.5,
/// §3.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// In every response, whatever the request's parameters (`id`, `schemas`).
    Always,
    /// In no response (`password`).
    Never,
    /// Unless `attributes` lists others or `excludedAttributes` names it (the default).
    Default,
    /// Only when `attributes` names it.
    Request,
}

impl Returned {
    /// The characteristic's value as RFC 7643 §7 spells it (`"always"`, `"never"`,
    /// `"default"`, `"request"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

/// The uniqueness a service provider enforces for an attribute: the `uniqueness`
/// characteristic (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    /// No uniqueness (the default).
    None,
    /// Unique within the bridge for its resource type (a User's `userName`); a clash
    /// answers 409 `uniqueness` (RFC 7644 §3.3).
    Server,
    /// Unique across all services (RFC 7643 §7); no attribute of the bridge uses it.
    Global,
}

impl Uniqueness {
    /// The characteristic's value as RFC 7643 §7 spells it (`"none"`, `"server"`,
    /// `"global"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute definition. Built with the `const fn` helpers below so the tables
/// read like the RFC's.
#[derive(Debug)]
pub struct AttrDef {
    /// The attribute name as published (`userName`, `$ref`); matched case-insensitively
    /// (RFC 7643 §2.1).
    pub name: &'static str,
    /// The `type` characteristic (RFC 7643 §2.3).
    pub ty: AttrType,
    /// `multiValued` (RFC 7643 §2.4): the value is a JSON array of values of [`Self::ty`].
    pub multi_valued: bool,
    /// The human-readable `description` published in /Schemas (RFC 7643 §7).
    pub description: &'static str,
    /// `required` (RFC 7643 §7): a create or replace of a resource whose top-level
    /// attribute (core or extension) is missing or blank answers 400 `invalidValue`.
    pub required: bool,
    /// `caseExact` (RFC 7643 §7): whether string comparisons in filters, PATCH value
    /// paths and uniqueness checks respect case.
    pub case_exact: bool,
    /// The `mutability` characteristic (RFC 7643 §7).
    pub mutability: Mutability,
    /// The `returned` characteristic (RFC 7643 §7).
    pub returned: Returned,
    /// The `uniqueness` characteristic (RFC 7643 §7).
    pub uniqueness: Uniqueness,
    /// Published as `canonicalValues` when set (RFC 7643 §7); `Some(&[])` publishes
    /// the empty list RFC 7643 §8.7.1 gives where no vocabulary is specified.
    pub canonical_values: Option<&'static [&'static str]>,
    /// For `reference` attributes, the `referenceTypes` (RFC 7643 §7): resource type names
    /// (`"User"`, `"Group"`), `"external"` (any URL) or `"uri"`; empty for other types.
    pub reference_types: &'static [&'static str],
    /// For `complex` attributes, their `subAttributes` (RFC 7643 §2.3.8); empty otherwise.
    pub sub_attributes: &'static [AttrDef],
    /// Which wrong-typed values IdPs send for this attribute and are accepted.
    pub leniency: Leniency,
}

/// The type coercions an attribute accepts because identity providers need them
/// (DESIGN: "wrong types are refused except the coercions IdPs need"). Everything
/// else of the wrong type answers 400 `invalidValue` naming the attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leniency {
    /// The JSON type the schema says, nothing else.
    None,
    /// A JSON number for a string (enterprise `employeeNumber`, `costCenter`: some
    /// HR-driven Okta and Entra mappings send them as numbers).
    NumberAsString,
    /// A bare id string, or a one-element array, for a singular complex attribute with
    /// a `value` (Entra ID sends the enterprise `manager` both ways).
    BareId,
}

impl AttrDef {
    const fn base(name: &'static str, ty: AttrType, description: &'static str) -> AttrDef {
        AttrDef {
            name,
            ty,
            multi_valued: false,
            description,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: None,
            reference_types: &[],
            sub_attributes: &[],
            leniency: Leniency::None,
        }
    }
    const fn string(name: &'static str, description: &'static str) -> AttrDef {
        Self::base(name, AttrType::String, description)
    }
    const fn boolean(name: &'static str, description: &'static str) -> AttrDef {
        Self::base(name, AttrType::Boolean, description)
    }
    const fn datetime(name: &'static str, description: &'static str) -> AttrDef {
        Self::base(name, AttrType::DateTime, description)
    }
    const fn reference(
        name: &'static str,
        types: &'static [&'static str],
        description: &'static str,
    ) -> AttrDef {
        let mut a = Self::base(name, AttrType::Reference, description);
        a.reference_types = types;
        a
    }
    const fn complex(
        name: &'static str,
        sub: &'static [AttrDef],
        description: &'static str,
    ) -> AttrDef {
        let mut a = Self::base(name, AttrType::Complex, description);
        a.sub_attributes = sub;
        a
    }
    const fn multi(mut self) -> AttrDef {
        self.multi_valued = true;
        self
    }
    const fn required(mut self) -> AttrDef {
        self.required = true;
        self
    }
    const fn case_exact(mut self) -> AttrDef {
        self.case_exact = true;
        self
    }
    const fn mutability(mut self, m: Mutability) -> AttrDef {
        self.mutability = m;
        self
    }
    const fn returned(mut self, r: Returned) -> AttrDef {
        self.returned = r;
        self
    }
    const fn unique(mut self) -> AttrDef {
        self.uniqueness = Uniqueness::Server;
        self
    }
    const fn canonical(mut self, values: &'static [&'static str]) -> AttrDef {
        self.canonical_values = Some(values);
        self
    }
    const fn lenient(mut self, leniency: Leniency) -> AttrDef {
        self.leniency = leniency;
        self
    }

    /// A sub-attribute by name, case-insensitively (RFC 7643 §2.1).
    pub fn sub(&self, name: &str) -> Option<&'static AttrDef> {
        find_in(self.sub_attributes, name)
    }

    /// Whether the `mutability` is `readOnly` (RFC 7643 §7), i.e. client values for it are
    /// ignored on create/replace and refused by PATCH.
    pub fn is_read_only(&self) -> bool {
        self.mutability == Mutability::ReadOnly
    }
}

fn find_in(attrs: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// A schema: a URN and its attributes.
#[derive(Debug)]
pub struct SchemaDef {
    /// The schema URN, the `id` of its /Schemas document (RFC 7643 §7), e.g. [`USER_URN`].
    pub id: &'static str,
    /// The schema's human-readable `name` (`"User"`, `"EnterpriseUser"`).
    pub name: &'static str,
    /// The schema's human-readable `description` published in /Schemas.
    pub description: &'static str,
    /// The top-level attributes, in the order /Schemas publishes them.
    pub attributes: &'static [AttrDef],
}

impl SchemaDef {
    /// Whether a resource must carry this (extension) schema: some attribute of it is
    /// required (RFC 7643 §6 `schemaExtensions.required`).
    pub fn is_required(&self) -> bool {
        self.attributes.iter().any(|a| a.required)
    }
}

impl SchemaDef {
    /// A top-level attribute of this schema by name, case-insensitively (RFC 7643 §2.1);
    /// `None` when the schema has no such attribute.
    pub fn attr(&self, name: &str) -> Option<&'static AttrDef> {
        find_in(self.attributes, name)
    }
}

/// The kinds of resource the bridge stores.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ResourceType {
    /// A User (RFC 7643 §4.1), served at `/Users`, core schema [`USER_URN`].
    User,
    /// A Group (RFC 7643 §4.2), served at `/Groups`, core schema [`GROUP_URN`].
    Group,
}

impl ResourceType {
    /// Every resource type, in the order /ResourceTypes lists them.
    pub const ALL: [ResourceType; 2] = [ResourceType::User, ResourceType::Group];

    /// The resource type's name (`"User"`, `"Group"`): its /ResourceTypes `name` and `id`
    /// and the `meta.resourceType` of its resources (RFC 7643 §3.1, §6).
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::User => "User",
            ResourceType::Group => "Group",
        }
    }
    /// The endpoint path below the SCIM base, e.g. `/Users`.
    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceType::User => "/Users",
            ResourceType::Group => "/Groups",
        }
    }
    /// The resource type with this [`name`](Self::name), case-insensitively; `None` for
    /// any other name.
    pub fn from_name(name: &str) -> Option<ResourceType> {
        ResourceType::ALL
            .into_iter()
            .find(|rt| rt.name().eq_ignore_ascii_case(name))
    }
    /// The core schema of this resource type ([`USER_SCHEMA`] or [`GROUP_SCHEMA`]),
    /// without extensions.
    pub fn schema(self) -> &'static SchemaDef {
        match self {
            ResourceType::User => &USER_SCHEMA,
            ResourceType::Group => &GROUP_SCHEMA,
        }
    }
    /// Schema extensions this type accepts: the built-in ones and those the admin
    /// declared.
    pub fn extensions(self) -> &'static [&'static SchemaDef] {
        let r = registry();
        match self {
            ResourceType::User => &r.user,
            ResourceType::Group => &r.group,
        }
    }
    /// The `description` its /ResourceTypes document publishes (RFC 7643 §6).
    pub fn description(self) -> &'static str {
        match self {
            ResourceType::User => "User Account",
            ResourceType::Group => "Group",
        }
    }

    /// Finds an attribute by an optional schema URN and a name, case-insensitively.
    /// Without a URN the core schema is searched first, then the common attributes,
    /// then the extensions (so `department` finds the enterprise attribute as many
    /// clients expect).
    pub fn find_attr(self, urn: Option<&str>, name: &str) -> Option<AttrRef> {
        match urn {
            Some(urn) => {
                let schema = self.schema_by_urn(urn)?;
                if std::ptr::eq(schema, self.schema()) {
                    if let Some(a) = find_in(COMMON_ATTRIBUTES, name) {
                        return Some(AttrRef {
                            schema: None,
                            def: a,
                        });
                    }
                }
                schema.attr(name).map(|def| AttrRef {
                    schema: self.extension_urn(schema),
                    def,
                })
            }
            None => {
                if let Some(a) = find_in(COMMON_ATTRIBUTES, name) {
                    return Some(AttrRef {
                        schema: None,
                        def: a,
                    });
                }
                if let Some(a) = self.schema().attr(name) {
                    return Some(AttrRef {
                        schema: None,
                        def: a,
                    });
                }
                self.extensions().iter().find_map(|ext| {
                    ext.attr(name).map(|def| AttrRef {
                        schema: Some(ext),
                        def,
                    })
                })
            }
        }
    }

    /// The schema (core or extension) with this URN, case-insensitively.
    pub fn schema_by_urn(self, urn: &str) -> Option<&'static SchemaDef> {
        if self.schema().id.eq_ignore_ascii_case(urn) {
            return Some(self.schema());
        }
        self.extensions()
            .iter()
            .copied()
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    fn extension_urn(self, schema: &'static SchemaDef) -> Option<&'static SchemaDef> {
        if std::ptr::eq(schema, self.schema()) {
            None
        } else {
            Some(schema)
        }
    }
}

/// An attribute found in a resource type: its definition and, for extension
/// attributes, the extension schema whose object holds it.
#[derive(Debug, Clone, Copy)]
pub struct AttrRef {
    /// The extension schema whose object (keyed by its URN) holds the attribute; `None` for
    /// core-schema and common attributes, which sit at the top level of the resource.
    pub schema: Option<&'static SchemaDef>,
    /// The attribute's definition.
    pub def: &'static AttrDef,
}

/// The User core schema URN (RFC 7643 §8.7.1).
pub const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The Group core schema URN (RFC 7643 §8.7.1).
pub const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The Enterprise User extension schema URN (RFC 7643 §4.3, §8.7.1).
pub const ENTERPRISE_USER_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

use Mutability::{Immutable, ReadOnly, WriteOnly};

/// `id`, `externalId` and `meta` (RFC 7643 §3.1), on every resource.
pub static COMMON_ATTRIBUTES: &[AttrDef] = &[
    AttrDef::string(
        "id",
        "Unique identifier for the SCIM resource as defined by the service provider.",
    )
    .case_exact()
    .mutability(ReadOnly)
    .returned(Returned::Always)
    .unique(),
    AttrDef::string(
        "externalId",
        "Identifier for the resource as defined by the provisioning client.",
    )
    .case_exact(),
    AttrDef::complex("meta", META_SUB, "Resource metadata.").mutability(ReadOnly),
];

static META_SUB: &[AttrDef] = &[
    AttrDef::string(
        "resourceType",
        "The name of the resource type of the resource.",
    )
    .case_exact()
    .mutability(ReadOnly),
    AttrDef::datetime(
        "created",
        "The date and time the resource was added to the service provider.",
    )
    .mutability(ReadOnly),
    AttrDef::datetime(
        "lastModified",
        "The most recent date and time that the details of this resource were updated.",
    )
    .mutability(ReadOnly),
    AttrDef::reference(
        "location",
        &["uri"],
        "The URI of the resource being returned.",
    )
    .case_exact()
    .mutability(ReadOnly),
    AttrDef::string(
        "version",
        "The version of the resource being returned (a weak ETag).",
    )
    .case_exact()
    .mutability(ReadOnly),
];

const TYPE_DOC: &str = "A label indicating the attribute's function.";
const PRIMARY_DOC: &str =
    "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.";
const DISPLAY_DOC: &str = "A human-readable name, primarily used for display purposes.";

static EMAIL_SUB: &[AttrDef] = &[
    AttrDef::string("value", "Email address for the User."),
    AttrDef::string("display", DISPLAY_DOC),
    AttrDef::string("type", TYPE_DOC).canonical(&["work", "home", "other"]),
    AttrDef::boolean("primary", PRIMARY_DOC),
];
static PHONE_SUB: &[AttrDef] = &[
    AttrDef::string("value", "Phone number of the User."),
    AttrDef::string("display", DISPLAY_DOC),
    AttrDef::string("type", TYPE_DOC)
        .canonical(&["work", "home", "mobile", "fax", "pager", "other"]),
    AttrDef::boolean("primary", PRIMARY_DOC),
];
static IMS_SUB: &[AttrDef] = &[
    AttrDef::string("value", "Instant messaging address for the User."),
    AttrDef::string("display", DISPLAY_DOC),
    AttrDef::string("type", TYPE_DOC)
        .canonical(&["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]),
    AttrDef::boolean("primary", PRIMARY_DOC),
];
static PHOTO_SUB: &[AttrDef] = &[
    AttrDef::reference("value", &["external"], "URL of a photo of the User."),
    AttrDef::string("display", DISPLAY_DOC),
    AttrDef::string("type", TYPE_DOC).canonical(&["photo", "thumbnail"]),
    AttrDef::boolean("primary", PRIMARY_DOC),
];
static ADDRESS_SUB: &[AttrDef] = &[
    AttrDef::string(
        "formatted",
        "The full mailing address, formatted for display or use with a mailing label.",
    ),
    AttrDef::string("streetAddress", "The full street address component."),
    AttrDef::string("locality", "The city or locality component."),
    AttrDef::string("region", "The state or region component."),
    AttrDef::string("postalCode", "The zip code or postal code component."),
    AttrDef::string("country", "The country name component."),
    AttrDef::string("type", TYPE_DOC).canonical(&["work", "home", "other"]),
    AttrDef::boolean("primary", PRIMARY_DOC),
];
static USER_GROUPS_SUB: &[AttrDef] = &[
    AttrDef::string("value", "The identifier of the User's group.").mutability(ReadOnly),
    AttrDef::reference(
        "$ref",
        &["User", "Group"],
        "The URI of the corresponding 'Group' resource.",
    )
    .mutability(ReadOnly),
    AttrDef::string("display", DISPLAY_DOC).mutability(ReadOnly),
    AttrDef::string("type", "Membership type: direct or indirect.")
        .canonical(&["direct", "indirect"])
        .mutability(ReadOnly),
];
// RFC 7643 §4.1.2 specifies no vocabulary for the `type` of entitlements, roles and
// x509Certificates; §8.7.1 publishes their canonicalValues as an empty list.
static LABELLED_SUB: &[AttrDef] = &[
    AttrDef::string("value", "The value of the attribute."),
    AttrDef::string("display", DISPLAY_DOC),
    AttrDef::string("type", TYPE_DOC).canonical(&[]),
    AttrDef::boolean("primary", PRIMARY_DOC),
];
static X509_SUB: &[AttrDef] = &[
    AttrDef::base(
        "value",
        AttrType::Binary,
        "The value of an X.509 certificate.",
    ),
    AttrDef::string("display", DISPLAY_DOC),
    AttrDef::string("type", TYPE_DOC).canonical(&[]),
    AttrDef::boolean("primary", PRIMARY_DOC),
];
static NAME_SUB: &[AttrDef] = &[
    AttrDef::string("formatted", "The full name, formatted for display."),
    AttrDef::string("familyName", "The family name of the User."),
    AttrDef::string("givenName", "The given name of the User."),
    AttrDef::string("middleName", "The middle name(s) of the User."),
    AttrDef::string("honorificPrefix", "The honorific prefix(es) of the User."),
    AttrDef::string("honorificSuffix", "The honorific suffix(es) of the User."),
];

/// The User core schema (RFC 7643 §4.1, §8.7.1): `userName` required and unique within
/// the server, `password` write-only and never returned, `groups` read-only (derived
/// from Group membership).
pub static USER_SCHEMA: SchemaDef = SchemaDef {
    id: USER_URN,
    name: "User",
    description: "User Account",
    attributes: &[
        AttrDef::string("userName", "Unique identifier for the User, typically used by the user to directly authenticate to the service provider.")
            .required()
            .unique(),
        AttrDef::complex("name", NAME_SUB, "The components of the user's real name."),
        AttrDef::string("displayName", "The name of the User, suitable for display to end-users."),
        AttrDef::string("nickName", "The casual way to address the user in real life."),
        AttrDef::reference("profileUrl", &["external"], "A fully qualified URL pointing to a page representing the User's online profile."),
        AttrDef::string("title", "The user's title, such as \"Vice President\"."),
        AttrDef::string("userType", "Used to identify the relationship between the organization and the user."),
        AttrDef::string("preferredLanguage", "Indicates the User's preferred written or spoken language."),
        AttrDef::string("locale", "Used to indicate the User's default location for purposes of localizing items."),
        AttrDef::string("timezone", "The User's time zone in the 'Olson' time zone database format."),
        AttrDef::boolean("active", "A Boolean value indicating the User's administrative status."),
        AttrDef::string("password", "The User's cleartext password; write-only, never stored in clear or returned.")
            .mutability(WriteOnly)
            .returned(Returned::Never),
        AttrDef::complex("emails", EMAIL_SUB, "Email addresses for the user.").multi(),
        AttrDef::complex("phoneNumbers", PHONE_SUB, "Phone numbers for the User.").multi(),
        AttrDef::complex("ims", IMS_SUB, "Instant messaging addresses for the User.").multi(),
        AttrDef::complex("photos", PHOTO_SUB, "URLs of photos of the User.").multi(),
        AttrDef::complex("addresses", ADDRESS_SUB, "A physical mailing address for this User.").multi(),
        AttrDef::complex("groups", USER_GROUPS_SUB, "A list of groups to which the user belongs.")
            .multi()
            .mutability(ReadOnly),
        AttrDef::complex("entitlements", LABELLED_SUB, "A list of entitlements for the User.").multi(),
        AttrDef::complex("roles", LABELLED_SUB, "A list of roles for the User.").multi(),
        AttrDef::complex("x509Certificates", X509_SUB, "A list of certificates issued to the User.").multi(),
    ],
};

static MANAGER_SUB: &[AttrDef] = &[
    AttrDef::string(
        "value",
        "The id of the SCIM resource representing the User's manager.",
    ),
    AttrDef::reference(
        "$ref",
        &["User"],
        "The URI of the SCIM resource representing the User's manager.",
    ),
    AttrDef::string("displayName", "The displayName of the User's manager.").mutability(ReadOnly),
];

/// The Enterprise User extension (RFC 7643 §4.3). `employeeNumber` and `costCenter`
/// also accept JSON numbers and `manager` a bare id (see [`Leniency`]), as Okta and
/// Entra ID send them.
pub static ENTERPRISE_USER_SCHEMA: SchemaDef = SchemaDef {
    id: ENTERPRISE_USER_URN,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: &[
        AttrDef::string(
            "employeeNumber",
            "Numeric or alphanumeric identifier assigned to a person.",
        )
        .lenient(Leniency::NumberAsString),
        AttrDef::string("costCenter", "Identifies the name of a cost center.")
            .lenient(Leniency::NumberAsString),
        AttrDef::string("organization", "Identifies the name of an organization."),
        AttrDef::string("division", "Identifies the name of a division."),
        AttrDef::string("department", "Identifies the name of a department."),
        AttrDef::complex("manager", MANAGER_SUB, "The User's manager.").lenient(Leniency::BareId),
    ],
};

static MEMBER_SUB: &[AttrDef] = &[
    AttrDef::string("value", "Identifier of the member of this Group.").mutability(Immutable),
    AttrDef::reference(
        "$ref",
        &["User", "Group"],
        "The URI corresponding to a SCIM resource that is a member of this Group.",
    )
    .mutability(Immutable),
    // Kept as the client sent it; when it sent none, the member's current name is shown.
    AttrDef::string("display", DISPLAY_DOC),
    AttrDef::string(
        "type",
        "A label indicating the type of resource, e.g., 'User' or 'Group'.",
    )
    .canonical(&["User", "Group"])
    .mutability(Immutable),
];

/// The Group core schema (RFC 7643 §4.2, §8.7.1): `displayName` required; `members`
/// with an immutable `value` and `$ref`, `type` one of `User` or `Group`.
pub static GROUP_SCHEMA: SchemaDef = SchemaDef {
    id: GROUP_URN,
    name: "Group",
    description: "Group",
    attributes: &[
        AttrDef::string("displayName", "A human-readable name for the Group.").required(),
        AttrDef::complex("members", MEMBER_SUB, "A list of members of the Group.").multi(),
    ],
};

/// Entra ID lists this schema in every Group it creates (its documented "Create
/// Group" request) and sends no attributes under it; published, empty, so that every
/// schema a known client sends is one the bridge defines.
pub const ADSCIM_GROUP_URN: &str =
    "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group";

/// The Entra ID group schema ([`ADSCIM_GROUP_URN`]): no attributes, published so that
/// Entra ID's Group requests name only schemas the bridge defines.
pub static ADSCIM_GROUP_SCHEMA: SchemaDef = SchemaDef {
    id: ADSCIM_GROUP_URN,
    name: "ADSCIMGroup",
    description: "Microsoft Entra ID's group schema; Entra ID sends no attributes under it.",
    attributes: &[],
};

/// Every schema of the running server: core, built-in extensions and declared ones.
pub fn all_schemas() -> &'static [&'static SchemaDef] {
    &registry().all
}

// ---------------------------------------------------------------------------------
// Declared extensions

/// A schema extension as an admin declares it in the config file (RFC 7643 §3.3).
/// Its attributes are simple (no complex type), readWrite, returned by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionDecl {
    /// The schema URN, e.g. `urn:ietf:params:scim:schemas:extension:acme:2.0:User`
    /// (Entra ID's custom attributes use this form; Okta's custom namespaces too).
    pub urn: String,
    /// The resource type the extension extends (config `resource_type = "User"` or
    /// `"Group"`); only resources of that type accept it.
    pub resource_type: ResourceType,
    /// Published `name`; defaults to the segment after `extension:` in the URN.
    pub name: Option<String>,
    /// Published `description`; defaults to "Declared in the scimbridge configuration.".
    pub description: Option<String>,
    /// The extension's attributes; at least one, names unique case-insensitively
    /// ([`validate_extensions`] refuses otherwise).
    pub attributes: Vec<AttrDecl>,
}

/// One attribute of a declared extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrDecl {
    /// The attribute name: a letter, then letters, digits, `-` or `_` (ATTRNAME of
    /// RFC 7644 §3.10).
    pub name: String,
    /// The attribute's type; never [`AttrType::Complex`] ([`AttrType::from_declared`]
    /// refuses it).
    pub ty: AttrType,
    /// `multiValued` (RFC 7643 §2.4): the value is a JSON array.
    pub multi_valued: bool,
    /// `caseExact` (RFC 7643 §7): string comparisons respect case.
    pub case_exact: bool,
    /// `required` (RFC 7643 §7): a resource of the extended type must carry it, which also
    /// makes the extension itself required (`schemaExtensions.required`, RFC 7643 §6).
    pub required: bool,
    /// Published `description`; defaults to "NAME (declared in the scimbridge
    /// configuration)".
    pub description: Option<String>,
}

impl AttrType {
    /// The type names RFC 7643 §2.3 uses, for declarations; `complex` is refused.
    pub fn from_declared(name: &str) -> Result<AttrType, String> {
        Ok(match name {
            "string" => AttrType::String,
            "boolean" => AttrType::Boolean,
            "decimal" => AttrType::Decimal,
            "integer" => AttrType::Integer,
            "dateTime" => AttrType::DateTime,
            "reference" => AttrType::Reference,
            "binary" => AttrType::Binary,
            "complex" => {
                return Err("complex attributes cannot be declared; declare each \
                            sub-attribute as its own attribute"
                    .into())
            }
            other => {
                return Err(format!(
                    "\"{other}\" is not a SCIM type; use string, boolean, decimal, integer, \
                     dateTime, reference or binary"
                ))
            }
        })
    }
}

/// Checks declarations against each other and the built-in schemas; the message says
/// which declaration is wrong (`scim.extensions[i] ("urn")`) and how to fix it.
/// Errors: a URN that does not start with `urn:`, ends with `:` or holds spaces,
/// control characters, quotes, brackets or backslashes; a built-in schema's URN; a
/// URN declared twice; an extension without attributes; an attribute name that is
/// not an ATTRNAME (RFC 7644 §3.10); an attribute declared twice.
pub fn validate_extensions(decls: &[ExtensionDecl]) -> Result<(), String> {
    let builtin = [
        USER_URN,
        GROUP_URN,
        ENTERPRISE_USER_URN,
        ADSCIM_GROUP_URN,
        "urn:ietf:params:scim:api:messages:2.0:PatchOp",
    ];
    for (i, d) in decls.iter().enumerate() {
        let urn = d.urn.as_str();
        let at = format!("scim.extensions[{i}] (\"{urn}\")");
        let urn_ok = urn.len() > 4
            && urn.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
            && urn
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'[' | b']' | b'\\'))
            && !urn.ends_with(':');
        if !urn_ok {
            return Err(format!(
                "{at}: the urn must look like urn:ietf:params:scim:schemas:extension:NAME:2.0:User"
            ));
        }
        if builtin.iter().any(|b| b.eq_ignore_ascii_case(urn)) {
            return Err(format!("{at}: this schema is built in; choose another URN"));
        }
        if decls[..i].iter().any(|o| o.urn.eq_ignore_ascii_case(urn)) {
            return Err(format!("{at}: declared twice"));
        }
        if d.attributes.is_empty() {
            return Err(format!("{at}: declare at least one attribute"));
        }
        for (j, a) in d.attributes.iter().enumerate() {
            if !is_attr_name(&a.name) || a.name.starts_with('$') {
                return Err(format!(
                    "{at}: \"{}\" is not an attribute name (a letter, then letters, digits, - or _)",
                    a.name
                ));
            }
            if d.attributes[..j]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&a.name))
            {
                return Err(format!(
                    "{at}: the attribute \"{}\" is declared twice",
                    a.name
                ));
            }
        }
    }
    Ok(())
}

/// ATTRNAME of RFC 7644 §3.10 (and `$ref`).
pub(crate) fn is_attr_name(name: &str) -> bool {
    // ATTRNAME = ALPHA *(nameChar), nameChar = "-" / "_" / DIGIT / ALPHA; "$ref" is
    // the one reserved name with a "$".
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '$' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Builds the schema of a declaration. Leaks it: declarations are built once per
/// process, at start, and live as long as the compiled-in tables.
fn build_extension(d: &ExtensionDecl) -> &'static SchemaDef {
    let default_name = d
        .urn
        .split(':')
        .skip_while(|s| !s.eq_ignore_ascii_case("extension"))
        .nth(1)
        .unwrap_or(&d.urn)
        .to_owned();
    let attributes: Vec<AttrDef> = d
        .attributes
        .iter()
        .map(|a| AttrDef {
            name: leak(a.name.clone()),
            ty: a.ty,
            multi_valued: a.multi_valued,
            description: leak(a.description.clone().unwrap_or_else(|| {
                format!("{} (declared in the scimbridge configuration)", a.name)
            })),
            required: a.required,
            case_exact: a.case_exact,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: None,
            reference_types: if a.ty == AttrType::Reference {
                &["external"]
            } else {
                &[]
            },
            sub_attributes: &[],
            leniency: Leniency::None,
        })
        .collect();
    Box::leak(Box::new(SchemaDef {
        id: leak(d.urn.clone()),
        name: leak(d.name.clone().unwrap_or(default_name)),
        description: leak(
            d.description
                .clone()
                .unwrap_or_else(|| "Declared in the scimbridge configuration.".to_owned()),
        ),
        attributes: Box::leak(attributes.into_boxed_slice()),
    }))
}

/// The schemas of the running server.
#[derive(Debug)]
struct Registry {
    user: Vec<&'static SchemaDef>,
    group: Vec<&'static SchemaDef>,
    all: Vec<&'static SchemaDef>,
}

impl Registry {
    fn new(decls: &[ExtensionDecl]) -> Registry {
        let mut r = Registry {
            user: vec![&ENTERPRISE_USER_SCHEMA],
            group: vec![&ADSCIM_GROUP_SCHEMA],
            all: vec![
                &USER_SCHEMA,
                &ENTERPRISE_USER_SCHEMA,
                &GROUP_SCHEMA,
                &ADSCIM_GROUP_SCHEMA,
            ],
        };
        for d in decls {
            let schema = build_extension(d);
            match d.resource_type {
                ResourceType::User => r.user.push(schema),
                ResourceType::Group => r.group.push(schema),
            }
            r.all.push(schema);
        }
        r
    }
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| Registry::new(&default_declarations()))
}

/// No declarations unless the config has some; the unit tests of the core run with
/// one test extension so that every resolver is exercised with a declared schema.
fn default_declarations() -> Vec<ExtensionDecl> {
    #[cfg(test)]
    {
        vec![tests::test_extension()]
    }
    #[cfg(not(test))]
    {
        Vec::new()
    }
}

/// Installs the admin's extensions; called once at start, before any request is
/// parsed. Fails when they are invalid or when the schemas were already in use.
pub fn install_extensions(decls: &[ExtensionDecl]) -> Result<(), String> {
    validate_extensions(decls)?;
    if let Some(existing) = REGISTRY.get() {
        let same = existing.all.len() == 4 + decls.len()
            && decls
                .iter()
                .zip(&existing.all[4..])
                .all(|(d, s)| d.urn == s.id);
        return if same {
            Ok(())
        } else {
            Err("the schema extensions were already installed".into())
        };
    }
    REGISTRY
        .set(Registry::new(decls))
        .map_err(|_| "the schema extensions were already installed".to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The declared extension every unit test of the core sees.
    pub(crate) const TEST_EXTENSION_URN: &str =
        "urn:ietf:params:scim:schemas:extension:scimbridgeTest:2.0:User";

    pub(crate) fn test_extension() -> ExtensionDecl {
        let attr = |name: &str, ty: AttrType, multi_valued: bool, case_exact: bool| AttrDecl {
            name: name.into(),
            ty,
            multi_valued,
            case_exact,
            required: false,
            description: None,
        };
        ExtensionDecl {
            urn: TEST_EXTENSION_URN.into(),
            resource_type: ResourceType::User,
            name: None,
            description: None,
            attributes: vec![
                attr("badge", AttrType::String, false, false),
                attr("clearance", AttrType::Integer, false, false),
                attr("remote", AttrType::Boolean, false, false),
                attr("tags", AttrType::String, true, false),
                attr("code", AttrType::String, false, true),
            ],
        }
    }

    #[test]
    fn declared_extensions_are_resolved_and_published() {
        let found = ResourceType::User
            .find_attr(Some(TEST_EXTENSION_URN), "BADGE")
            .unwrap();
        assert_eq!(found.def.name, "badge");
        assert_eq!(found.schema.unwrap().id, TEST_EXTENSION_URN);
        assert_eq!(found.schema.unwrap().name, "scimbridgeTest");
        // Unqualified names find extension attributes too.
        assert_eq!(
            ResourceType::User
                .find_attr(None, "clearance")
                .unwrap()
                .def
                .ty,
            AttrType::Integer
        );
        assert!(all_schemas().iter().any(|s| s.id == TEST_EXTENSION_URN));
        assert!(ResourceType::Group
            .find_attr(Some(TEST_EXTENSION_URN), "badge")
            .is_none());
        assert!(ResourceType::Group
            .extensions()
            .iter()
            .any(|s| s.id == ADSCIM_GROUP_URN));
    }

    #[test]
    fn bad_declarations_are_explained() {
        let ok = test_extension();
        let with = |f: &dyn Fn(&mut ExtensionDecl)| {
            let mut d = ok.clone();
            f(&mut d);
            validate_extensions(&[d]).unwrap_err()
        };
        assert!(with(&|d| d.urn = "acme:2.0:User".into()).contains("urn:"));
        assert!(with(&|d| d.urn = ENTERPRISE_USER_URN.to_lowercase()).contains("built in"));
        assert!(with(&|d| d.attributes.clear()).contains("at least one"));
        assert!(with(&|d| d.attributes[1].name = "Badge".into()).contains("twice"));
        assert!(with(&|d| d.attributes[0].name = "1x".into()).contains("not an attribute name"));
        assert!(validate_extensions(&[ok.clone(), ok.clone()])
            .unwrap_err()
            .contains("declared twice"));
        assert!(AttrType::from_declared("complex")
            .unwrap_err()
            .contains("sub-attribute"));
        assert!(AttrType::from_declared("text")
            .unwrap_err()
            .contains("not a SCIM type"));
        validate_extensions(&[ok]).unwrap();
    }

    #[test]
    fn type_labels_publish_canonical_values() {
        for name in [
            "entitlements",
            "roles",
            "x509Certificates",
            "emails",
            "phoneNumbers",
        ] {
            let def = USER_SCHEMA.attr(name).unwrap();
            assert!(
                def.sub("type").unwrap().canonical_values.is_some(),
                "{name}.type has no canonicalValues"
            );
        }
    }

    #[test]
    fn finds_attributes_case_insensitively() {
        let a = ResourceType::User.find_attr(None, "USERNAME").unwrap();
        assert_eq!(a.def.name, "userName");
        assert!(a.schema.is_none());
        let e = ResourceType::User
            .find_attr(
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:user"),
                "Department",
            )
            .unwrap();
        assert_eq!(e.def.name, "department");
        assert_eq!(e.schema.unwrap().id, ENTERPRISE_USER_URN);
        assert!(ResourceType::Group.find_attr(None, "userName").is_none());
        assert_eq!(
            ResourceType::User
                .find_attr(Some(USER_URN), "id")
                .unwrap()
                .def
                .name,
            "id"
        );
    }

    #[test]
    fn user_name_is_required_unique_and_case_insensitive() {
        let a = USER_SCHEMA.attr("userName").unwrap();
        assert!(a.required && !a.case_exact && a.uniqueness == Uniqueness::Server);
    }
}
