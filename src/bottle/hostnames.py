"""Which route hosts can be meant: a public name, or (``private: true``) an internal one.

A route names a host the operator means to reach. Some names cannot mean an outside service
whatever DNS says: IP literals (in any of the forms ``inet_aton`` accepts, like
``2130706433`` or ``0x7f.1``), ``localhost``, single-label names (``egress``, ``supervise``:
the bottle's own services), names under ``.internal`` or ``.local``, the cloud metadata names,
and wildcards over names where anyone can get one: a public suffix (``*.com``,
``*.github.io``), a domain with a public suffix under it (``*.amazonaws.com`` holds
``s3.amazonaws.com``: anyone's bucket), a shared hosting name the public suffix list
does not hold (``*.storage.googleapis.com``, ``*.slack.com``), or a name under shared hosting,
the list's private entries or ours (``*.corp.s3.amazonaws.com`` holds the bucket
``evil.corp``). An exact host that serves anyone's by its path
(``s3.amazonaws.com/<bucket>``, ``hooks.slack.com/services/...``) needs paths that keep to
the operator's own (the route checks them: :func:`shared_by_path`). The list's IDN entries
are compared IDNA-encoded, the form a name reaches us in (``*.xn--stfold-9xa.no``). They
are refused here, on both sides of the boundary (this module is pure and runs in the
sidecars too); a route that says ``private: true`` may name internal names and private IP
literals, never the metadata service, loopback or the bottle's own services.
"""

from __future__ import annotations

import encodings.idna
import functools
import ipaddress
import re
import unicodedata

#: The bottle's own services on its networks, and their container names: never a route.
OWN_SERVICES = frozenset({"egress", "supervise", "git-gate", "agent"})
#: Cloud instance metadata services: the machine's credentials, never a route.
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
    }
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
#: Suffixes that name private networks by convention (RFC 6762, RFC 8375, ICANN's .internal).
INTERNAL_SUFFIXES = (
    "internal",
    "local",
    "localdomain",
    "home.arpa",
    "lan",
    "intranet",
    "corp",
    "private",
)
#: Where each name (at any depth) is someone's bucket, database, tunnel, workspace or site,
#: and the public suffix list has no entry for it: a wildcard at, above or under one reaches
#: anyone's. Not complete (it cannot be); the list's own entries are checked as well.
SHARED_HOSTING = (
    # Object stores: every name is a bucket, and dotted bucket names reach below the base.
    "storage.googleapis.com",
    "firebasestorage.app",
    "r2.cloudflarestorage.com",
    "backblazeb2.com",
    "wasabisys.com",
    "aliyuncs.com",
    "myqcloud.com",
    "queue.core.windows.net",
    "table.core.windows.net",
    "dfs.core.windows.net",
    # AWS: ECR, API Gateway, RDS, OpenSearch, IoT… put each tenant's resource under a
    # region's service name, too many to list; no wildcard under it is one owner's.
    "amazonaws.com",
    "amazonaws.com.cn",
    # Azure and registries: each name is a customer's resource, service or registry.
    "vault.azure.net",
    "cloudapp.azure.com",
    "openai.azure.com",
    "cognitiveservices.azure.com",
    "documents.azure.com",
    "database.windows.net",
    "azure-devices.net",
    "azurecr.io",
    "jfrog.io",
    # Hosted databases, search and error intake: each name is a customer's project.
    "firebaseio.com",
    "upstash.io",
    "neon.tech",
    "mongodb.net",
    "pinecone.io",
    "algolia.net",
    "ingest.sentry.io",
    "ingest.us.sentry.io",
    "ingest.de.sentry.io",
    # User content and sites: anyone's upload, blog or app.
    "googleusercontent.com",
    "glitch.me",
    "wordpress.com",
    "substack.com",
    "medium.com",
    "tumblr.com",
    "gradio.live",
    "modal.run",
    # Tunnels: anyone's laptop, one command away.
    "loca.lt",
    "localtunnel.me",
    "devtunnels.ms",
    "lhr.life",
    "serveo.net",
    "pinggy.link",
    "bore.pub",
    "localhost.run",
    "share.zrok.io",
    "tunnelto.dev",
    "loophole.site",
    "app.github.dev",
    # Request catchers and out-of-band callbacks: built to receive what leaks.
    "pipedream.net",
    "webhook.site",
    "requestbin.net",
    "requestcatcher.com",
    "beeceptor.com",
    "dnslog.cn",
    "ceye.io",
    "canarytokens.com",
    "oastify.com",
    "burpcollaborator.net",
    "interact.sh",
    "oast.pro",
    "oast.live",
    "oast.site",
    "oast.online",
    "oast.fun",
    "oast.me",
    # Tenant hosts: each name is some organisation's workspace, anyone can open one.
    "atlassian.net",
    "sharepoint.com",
    "zendesk.com",
    "freshdesk.com",
    "slack.com",
    "okta.com",
    "auth0.com",
    "my.salesforce.com",
    "service-now.com",
    "freshservice.com",
    "force.com",
    "my.site.com",
    "ghe.com",
    "cloudflareaccess.com",
    "snowflakecomputing.com",
    "cloud.databricks.com",
    "azuredatabricks.net",
)
#: Exact hosts where the *path* names anyone's bucket, webhook or topic, with no
#: credential of theirs needed to write there: a route to one reaches anyone's unless its
#: ``paths`` keep it to the operator's own (see :func:`shared_by_path`).
PATH_SHARED_HOSTS = frozenset(
    {
        # Object stores, path-style: /<bucket>/<key>, anyone's public-write bucket.
        "storage.googleapis.com",
        "storage.cloud.google.com",
        "firebasestorage.googleapis.com",
        "www.googleapis.com",  # /upload/storage/v1/b/<bucket>
        # Webhooks and push: the path is someone's hook, bot or topic.
        "hooks.slack.com",
        "discord.com",
        "discordapp.com",
        "api.telegram.org",
        "hooks.zapier.com",
        "maker.ifttt.com",
        "ntfy.sh",
        "webhook.site",
        "api.pushbullet.com",
    }
)
#: The same, by the shape of a region's endpoint: S3 and the stores that speak its API.
_PATH_SHARED_RE = re.compile(
    r"^(s3([.-][a-z0-9-]+)*\.amazonaws\.com(\.cn)?"
    r"|s3([.-][a-z0-9-]+)*\.wasabisys\.com"
    r"|[a-z0-9-]+\.backblazeb2\.com"
    r"|[a-z0-9-]+\.digitaloceanspaces\.com"
    r"|[a-z0-9-]+\.linodeobjects\.com)$"
)
#: Where each of those hosts names an owner in the path, with an owner no operator's rule
#: means: a route whose rules let one through reaches anyone's.
ANYONES_PATHS = (
    "/bottle-probe/object",  # a bucket, a topic, a catcher's id
    "/services/T0PROBE/B0PROBE/x",  # Slack: a team T..., a hook B...
    "/api/webhooks/0/bottle-probe",  # Discord, unversioned and versioned
    "/api/v10/webhooks/0/bottle-probe",
    "/botbottle-probe/sendMessage",  # Telegram
    "/hooks/catch/0/bottle-probe/",  # Zapier
    "/trigger/e/with/key/bottle-probe",  # IFTTT
    "/v2/pushes",  # Pushbullet: the token is a header
    "/storage/v1/b/bottle-probe/o",  # Google Cloud Storage's JSON API
    "/upload/storage/v1/b/bottle-probe/o",
    "/v0/b/bottle-probe/o",  # Firebase Storage
)
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME_RE = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")
# A last label that is all digits or 0x-hex is an address to inet_aton, never a TLD.
_NUMERIC_LABEL_RE = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def normalise(value: str) -> str:
    """Lower case, no trailing dot, no brackets around an IPv6 literal."""
    host = value.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def check_syntax(value: str) -> str:
    """The normalised host, or ``ValueError`` when it is not a host name or IP literal."""
    host = normalise(value)
    if _ip(host) is not None or _NAME_RE.fullmatch(host):
        return host
    raise ValueError(
        f"{value!r} is not a host name: use a name like api.example.com or a "
        "leading wildcard like *.example.com (no scheme, port or path)"
    )


def refusal(host: str, *, private: bool) -> str | None:
    """Why a route may not name ``host`` (already :func:`check_syntax`-ed); None: it may."""
    address = _ip(host)
    if address is not None:
        return _address_refusal(host, address, private=private)
    labels = host.split(".")
    if _NUMERIC_LABEL_RE.fullmatch(labels[-1]):
        return (
            f"{host!r} is an IP address in a non-standard form (decimal, octal or hex); "
            "name the host, or write the address as a.b.c.d with private: true"
        )
    # The list's IDN entries are compared in ASCII; so is the name (a no-op after check_syntax).
    bare = _to_ascii(host.removeprefix("*."))
    if bare == "localhost" or bare.endswith(".localhost"):
        return f"{host!r} is this machine (localhost): no route leads there"
    if bare in METADATA_NAMES:
        return f"{host!r} is a cloud metadata service: no route leads there"
    if host.startswith("*.") and _is_public_suffix(bare):
        return (
            f"{host!r} is a wildcard over the public suffix {bare!r}, which would allow "
            "every site under it: name the site, like *.example.com"
        )
    if host.startswith("*."):
        shared_reason = _shared_refusal(host, bare)
        if shared_reason is not None:
            return shared_reason
    if "." not in bare:
        if bare in OWN_SERVICES:
            return f"{host!r} is one of the bottle's own services: no route leads there"
        if not private:
            return (
                f"{host!r} has no dot, so it names an internal host (or a bottle service); "
                "use the full name, or add private: true if it really is internal"
            )
    if not private and any(bare == s or bare.endswith("." + s) for s in INTERNAL_SUFFIXES):
        return (
            f"{host!r} is an internal name; a route to it needs private: true "
            "(a public route must not lead into private networks)"
        )
    return None


def shared_by_path(host: str) -> bool:
    """Whether the exact ``host`` serves anyone's bucket, hook or topic by its path
    (``s3.amazonaws.com/<bucket>``, ``hooks.slack.com/services/...``)."""
    bare = _to_ascii(host)
    return bare in PATH_SHARED_HOSTS or _PATH_SHARED_RE.fullmatch(bare) is not None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _address_refusal(
    host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, private: bool
) -> str | None:
    inner = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    judged = inner or address
    if judged in METADATA_ADDRESSES:
        return f"{host!r} is the cloud metadata address: no route leads there"
    if judged.is_loopback or judged.is_unspecified or judged.is_multicast:
        return f"{host!r} is a loopback, unspecified or multicast address: no route leads there"
    if "%" in host:
        return f"{host!r} carries an interface scope: name the host instead"
    if not private:
        return (
            f"{host!r} is an IP literal: name the host (a route to an address needs "
            "private: true, and is meant for internal services)"
        )
    return None


@functools.cache
def _suffixes() -> object:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def _is_public_suffix(name: str) -> bool:
    psl = _suffixes()
    # Unknown TLDs count as public too (the list's default rule "*"): "*.test" is refused.
    return bool(psl.is_public(name))  # type: ignore[attr-defined]


def _shared_refusal(host: str, bare: str) -> str | None:
    """Why the wildcard ``host`` (over ``bare``) reaches names anyone can get, or None."""
    shared = _shared_bases().get(bare)
    if shared is not None:
        return (
            f"{host!r} is a wildcard covering {shared!r}, where anyone can get a name (a "
            "bucket, a site, a tunnel, a workspace), so it would reach anyone's: list the "
            f"exact hosts instead (your-name.{shared}, not {host})"
        )
    above = _shared_above(bare)
    if above is not None:
        return (
            f"{host!r} is a wildcard under {above!r}, where anyone can get a name (a "
            "bucket, a site, a tunnel, a workspace), dots included, so it would reach "
            f"anyone's: list the exact hosts instead (your-name.{bare}, not {host})"
        )
    return None


def _to_ascii(name: str) -> str:
    """``name`` in the form hosts reach us in: each Unicode label IDNA-encoded (``xn--``)."""
    if name.isascii():
        return name
    return ".".join(_label_to_ascii(label) for label in name.split("."))


def _label_to_ascii(label: str) -> str:
    if label.isascii():
        return label
    try:
        return encodings.idna.ToASCII(label).decode("ascii")
    except UnicodeError:
        # IDNA 2003 refuses some labels IDNA 2008 allows; the plain punycode is theirs.
        return "xn--" + label.encode("punycode").decode("ascii")


def _label_forms(label: str) -> set[str]:
    """Every ASCII form of a list label: IDNA 2008 keeps it as it is (``ß``), IDNA 2003
    first maps it (to ``ss``); nameprep is slow, so only labels it would change pay for it."""
    if label.isascii():
        return {label}
    forms = {"xn--" + label.encode("punycode").decode("ascii")}
    if unicodedata.normalize("NFKC", label.casefold()) != label:
        forms.add(_label_to_ascii(label))
    return forms


def _ascii_forms(name: str) -> set[str]:
    forms = {""}
    for label in name.split("."):
        forms = {f"{f}.{a}" if f else a for f in forms for a in _label_forms(label)}
    return forms


@functools.cache
def _rules() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The list's entries, ICANN and private apart, in ASCII (its IDN entries in both forms)."""
    import publicsuffixlist

    icann: list[str] = []
    private: list[str] = []
    section = icann
    with open(publicsuffixlist.PSLFILE, encoding="utf-8") as source:
        for line in source:
            if line.startswith("// ===BEGIN PRIVATE DOMAINS==="):
                section = private
            rule = line.split(" ", 1)[0].strip().lower()
            if not rule or rule.startswith(("//", "!")):
                continue
            name = rule.removeprefix("*.")
            if name.isascii():
                section.append(name)
            else:
                section.extend(_ascii_forms(name))
    return tuple(icann), tuple(private)


@functools.cache
def _shared_bases() -> dict[str, str]:
    """Every public suffix of the list and every domain above one, each with a suffix at
    or under it (``amazonaws.com``: ``s3.amazonaws.com``); the same of :data:`SHARED_HOSTING`."""
    icann, private = _rules()
    names = (*SHARED_HOSTING, *icann, *private)
    bases: dict[str, str] = {}
    for name in names:
        labels = name.split(".")
        for i in range(1, len(labels)):
            base = ".".join(labels[i:])
            # The shortest name under it names it best: s3.amazonaws.com, not a region's
            # endpoint, nor amazonaws.com itself.
            if base not in bases or len(name) < len(bases[base]):
                bases[base] = name
    for name in names:
        bases.setdefault(name, name)
    return bases


@functools.cache
def _shared_roots() -> frozenset[str]:
    """Where every name below is anyone's: :data:`SHARED_HOSTING` and the list's private
    entries (shared hosting that asked to be listed). Its ICANN entries are registries:
    ``example.co.uk`` and all below it are one owner's."""
    return frozenset((*SHARED_HOSTING, *_rules()[1]))


def _shared_above(name: str) -> str | None:
    """The nearest shared root strictly above ``name`` (``corp.s3.amazonaws.com``, a dotted
    bucket's base: ``s3.amazonaws.com``), or None."""
    roots = _shared_roots()
    labels = name.split(".")
    return next((r for i in range(1, len(labels)) if (r := ".".join(labels[i:])) in roots), None)
