#!/usr/bin/env python3
"""Security policy for docker-compose files (checkov has no compose framework).

Usage: compose-policy.py FILE...   (run by .ci/lint; needs PyYAML)

Every service gets every rule unless EXEMPT below names the service, the rule and the reason;
an exemption that is no longer needed is itself an error, so the table only shrinks.

Rules (exemptible):
  image-tag         `image:` has an explicit tag other than `latest` (or a digest)
  restart           a restart policy other than "no"
  limits            deploy.resources.limits.cpus and .memory
  healthcheck       a healthcheck with a test, not disabled
  read-only         read_only: true
  cap-drop-all      cap_drop contains ALL
  no-new-privileges security_opt contains no-new-privileges:true
  non-root          the service runs as a non-root user: `user:` when set, else for a service
                    built here the last USER of the Dockerfile's final (or target) stage;
                    a third-party image without `user:` cannot be checked offline and fails
Rules (never exempt):
  privileged, cap_add, network_mode/pid/ipc/userns_mode "host", the Docker socket mounted,
  seccomp/apparmor "unconfined", and a port published on every interface by a service not
  in PUBLIC (bind the others to 127.0.0.1).

Services merged from YAML anchors (`<<: *service`) are checked as merged. Profiles are
ignored: every service in the file is checked.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

# Services allowed to publish a port on every interface.
PUBLIC = {"gateway"}

_ENTRYPOINT_AS_ROOT = (
    "official image whose entrypoint starts as root, chowns its data directory and drops to "
    "its own user (gosu/su-exec): needs CHOWN/SETUID/SETGID and writable run directories; "
    "tightening it needs a Docker engine to verify, which this CI does not have"
)
_THIRD_PARTY = (
    "third-party image, unchanged from upstream; tightening it needs a Docker engine to "
    "verify, which this CI does not have"
)
EXEMPT: dict[str, dict[str, str]] = {
    "postgres": {rule: _ENTRYPOINT_AS_ROOT for rule in ("read-only", "cap-drop-all", "no-new-privileges", "non-root")},
    "redis": {rule: _ENTRYPOINT_AS_ROOT for rule in ("read-only", "cap-drop-all", "no-new-privileges", "non-root")},
    "nats": {rule: _THIRD_PARTY + " (the image runs nats-server as root)"
             for rule in ("read-only", "cap-drop-all", "no-new-privileges", "non-root")},
    "otel-collector": {
        "healthcheck": "the image has no shell and no probe binary; its health_check extension "
                       "(:13133) is for an outside prober (optional observability profile)",
        **{rule: _THIRD_PARTY + " (upstream runs as UID 10001)"
           for rule in ("read-only", "cap-drop-all", "no-new-privileges", "non-root")},
    },
    "prometheus": {
        "healthcheck": "optional observability profile; nothing depends on its health",
        **{rule: _THIRD_PARTY + " (upstream runs as nobody)"
           for rule in ("read-only", "cap-drop-all", "no-new-privileges", "non-root")},
    },
}

ROOT_USERS = {"", "0", "root"}


def dockerfile_user(path: Path, target: str | None) -> str | None:
    """The last USER of the final stage (or of stage `target`), None when there is none."""
    text = re.sub(r"\\\r?\n", " ", path.read_text(encoding="utf-8"))
    stages: list[tuple[str | None, str | None]] = []  # (stage name, last USER)
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.search(r"\sAS\s+(\S+)\s*$", " " + rest, re.IGNORECASE)
            stages.append((m.group(1).lower() if m else None, None))
        elif word == "USER" and stages:
            stages[-1] = (stages[-1][0], rest.strip())
    if target:
        named = [user for name, user in stages if name == target.lower()]
        return named[-1] if named else None
    return stages[-1][1] if stages else None


def is_root(user: str) -> bool:
    return str(user).split(":")[0].strip() in ROOT_USERS


def as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def check_service(compose: Path, name: str, svc: dict) -> tuple[dict[str, str], list[str]]:
    """Returns ({exemptible rule: failure}, [failures of rules that are never exempt])."""
    fails: dict[str, str] = {}
    hard: list[str] = []

    image = svc.get("image")
    if not image:
        fails["image-tag"] = "no image: name it (and tag it) even when it is built here"
    else:
        ref = str(image).rsplit("/", 1)[-1]
        if "@sha256:" not in ref and (":" not in ref or ref.endswith(":latest")):
            fails["image-tag"] = f"image {image!r} has no explicit tag (or uses latest)"

    if svc.get("restart") in (None, "no"):
        fails["restart"] = "no restart policy"

    limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    missing = [k for k in ("cpus", "memory") if not limits.get(k)]
    if missing:
        fails["limits"] = f"deploy.resources.limits lacks {', '.join(missing)}"

    hc = svc.get("healthcheck")
    test = as_list((hc or {}).get("test"))
    if not hc or hc.get("disable") or not test or test[0] == "NONE":
        fails["healthcheck"] = "no healthcheck"

    if svc.get("read_only") is not True:
        fails["read-only"] = "read_only is not true"

    if "ALL" not in [str(c).upper() for c in as_list(svc.get("cap_drop"))]:
        fails["cap-drop-all"] = "cap_drop does not contain ALL"

    security_opt = [str(o).replace("=", ":").replace(" ", "") for o in as_list(svc.get("security_opt"))]
    if not any(o in ("no-new-privileges", "no-new-privileges:true") for o in security_opt):
        fails["no-new-privileges"] = "security_opt lacks no-new-privileges:true"

    user = svc.get("user")
    build = svc.get("build")
    if user is not None:
        if is_root(user):
            fails["non-root"] = f"user: {user!r} is root"
    elif build is not None:
        build = {"context": build} if isinstance(build, str) else build
        context = compose.parent / str(build.get("context", "."))
        dockerfile = context / str(build.get("dockerfile", "Dockerfile"))
        if not dockerfile.is_file():
            fails["non-root"] = f"cannot read {dockerfile} to check its USER"
        else:
            image_user = dockerfile_user(dockerfile, build.get("target"))
            if image_user is None or is_root(image_user):
                fails["non-root"] = f"{dockerfile}: the runtime stage has no non-root USER (found {image_user!r})"
    else:
        fails["non-root"] = "third-party image without `user:`: its user cannot be checked offline"

    if svc.get("privileged"):
        hard.append("privileged: true")
    if svc.get("cap_add"):
        hard.append(f"cap_add: {svc['cap_add']}")
    for key in ("network_mode", "pid", "ipc", "userns_mode"):
        if str(svc.get(key, "")).lower() == "host":
            hard.append(f"{key}: host")
    for opt in security_opt:
        if opt.endswith(":unconfined"):
            hard.append(f"security_opt {opt}")
    for vol in as_list(svc.get("volumes")):
        source = vol.get("source", "") if isinstance(vol, dict) else str(vol).split(":", 1)[0]
        if "docker.sock" in str(source):
            hard.append(f"mounts the Docker socket ({source})")
    if name not in PUBLIC:
        for port in as_list(svc.get("ports")):
            if isinstance(port, dict):
                published_on_all = port.get("published") is not None and port.get("host_ip") in (None, "", "0.0.0.0", "::")
            else:
                spec = str(port)
                host_ip = None
                if spec.startswith("["):  # [::1]:8080:8080
                    host_ip, _, spec = spec[1:].partition("]:")
                elif spec.count(":") >= 2:  # 127.0.0.1:8080:8080
                    host_ip = spec.split(":", 1)[0]
                published_on_all = host_ip in (None, "", "0.0.0.0", "::")
            if published_on_all:
                hard.append(f"port {port!r} is published on every interface (bind it to 127.0.0.1, or add the service to PUBLIC)")
    return fails, hard


def main(paths: list[str]) -> int:
    errors: list[str] = []
    for arg in paths:
        compose = Path(arg)
        doc = yaml.safe_load(compose.read_text(encoding="utf-8")) or {}
        services = doc.get("services") or {}
        if not services:
            errors.append(f"{compose}: no services")
        for name in EXEMPT:
            if name not in services:
                errors.append(f"{compose}: EXEMPT names service {name!r}, which the file does not have")
        exempted = 0
        for name, svc in services.items():
            fails, hard = check_service(compose, name, svc or {})
            exempt = EXEMPT.get(name, {})
            for rule, message in fails.items():
                if rule in exempt:
                    exempted += 1
                else:
                    errors.append(f"{compose}: service {name!r}: [{rule}] {message}")
            for rule in exempt:
                if rule not in fails:
                    errors.append(f"{compose}: service {name!r}: [{rule}] passes now: remove its exemption from EXEMPT in .ci/compose-policy.py")
            errors.extend(f"{compose}: service {name!r}: [forbidden] {message}" for message in hard)
        print(f"{compose}: {len(services)} services checked, {exempted} documented exemptions")
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"compose policy: {len(errors)} violation(s)", file=sys.stderr)
        return 1
    print("compose policy: ok")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
