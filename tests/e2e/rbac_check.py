#!/usr/bin/env python3
"""Checks the chart's RBAC against the API calls its components really made.

The calls come from the kube-apiserver's audit log (tests/k8s/control-plane.sh writes one
Metadata event per request by a ServiceAccount): each (verb, apiGroup, resource[/subresource])
a chart ServiceAccount used, and whether it was denied. The rules come from the release's
Roles and ClusterRoles (kubectl get -o json). Fails when
  - a call by a chart account was denied (403): a missing rule;
  - a rule's (group, resource, verb) was never called, unless tests/e2e/rbac_expected_unused.txt
    lists it with the code path that needs it and why the e2e run does not reach it.
Prints, per account, the calls and the rules they matched. --since limits it to one run's
events (the log outlives runs on the same cluster).
"""
import argparse
import collections
import json
import sys


def load_audit(path, accounts, since):
    calls = collections.defaultdict(set)   # account -> {(group, resource, verb)}
    denied = collections.defaultdict(set)
    with open(path) as f:
        for line in f:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            # RFC 3339 with microseconds, UTC: compares as a string.
            if ev.get("requestReceivedTimestamp", "") < since:
                continue
            user = ev.get("user", {}).get("username", "")
            if user not in accounts:
                continue
            ref = ev.get("objectRef")
            if not ref:
                continue  # discovery and other non-resource URLs
            resource = ref.get("resource", "")
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            key = (ref.get("apiGroup", ""), resource, ev.get("verb", ""))
            code = ev.get("responseStatus", {}).get("code", 0)
            if code == 403:
                denied[accounts[user]].add(key)
            else:
                calls[accounts[user]].add(key)
    return calls, denied


def load_rules(path, namespace, release):
    """Returns {account: [(kind/name, group, resource, verb)]} via the bindings' names.

    The chart names each Role/ClusterRole after the ServiceAccount bound to it."""
    rules = collections.defaultdict(list)
    with open(path) as f:
        doc = json.load(f)
    for item in doc["items"]:
        name = item["metadata"]["name"]
        for rule in item.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        rules[name].append((item["kind"] + "/" + name, group, resource, verb))
    return rules


def load_expected_unused(path):
    expected = set()
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            account, group, resource, verb = line.split()
            expected.add((account, "" if group == "core" else group, resource, verb))
    return expected


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--audit", required=True)
    p.add_argument("--since", default="", help="ignore events before this RFC 3339 time")
    p.add_argument("--rbac", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--release", required=True)
    p.add_argument("--expected-unused", required=True)
    a = p.parse_args()

    rules = load_rules(a.rbac, a.namespace, a.release)
    accounts = {f"system:serviceaccount:{a.namespace}:{name}": name for name in rules}
    calls, denied = load_audit(a.audit, accounts, a.since)
    expected_unused = load_expected_unused(a.expected_unused)
    problems = []
    for account in sorted(rules):
        print(f"rbac_check: {account}: {len(calls[account])} distinct calls")
        for group, resource, verb in sorted(calls[account]):
            print(f"  called  {verb:7} {group or 'core'}/{resource}")
        for key in sorted(denied[account]):
            problems.append(f"{account}: {key[2]} {key[0] or 'core'}/{key[1]} was DENIED: missing rule")
        for origin, group, resource, verb in rules[account]:
            if (group, resource, verb) in calls[account]:
                continue
            if (account.split("-")[-1], group, resource, verb) in expected_unused:
                print(f"  unused  {verb:7} {group or 'core'}/{resource} (expected: see rbac_expected_unused.txt)")
                continue
            problems.append(f"{account}: rule {verb} {group or 'core'}/{resource} ({origin}) "
                            "was never used: remove it, or list it in rbac_expected_unused.txt "
                            "with the call that needs it")
    for line in problems:
        print("rbac_check: " + line, file=sys.stderr)
    if not rules:
        print("rbac_check: no Roles or ClusterRoles found for the release", file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
