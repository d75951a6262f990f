"""Helpers of the tests that move production between the lab's regions (test_failover.py, test_fencing.py):
the failover playbook with its result file, and what the database, DNS and the Kubernetes doubles say."""
import json
import urllib.request

import boto3

from lab_fixtures import pg_value, playbook_result

FAST_DETECT = ["-e", "region_failover_detect_interval_s=0.5", "-e", "region_failover_detect_threshold=3",
               "-e", "region_failover_detect_timeout_s=1"]


def one(hv, sql, args=None, db="fediflow"):
    """lab_fixtures.pg_value, in the application's database by default."""
    return pg_value(hv, sql, args, db)


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def k8s(hv, path):
    return get_json(hv["fediflow_k8s_api_url"] + path)


def app_state(hv):
    ns = hv["fediflow_k8s_namespace"]
    deps = k8s(hv, "/apis/apps/v1/namespaces/%s/deployments" % ns)["items"]
    cm = k8s(hv, "/api/v1/namespaces/%s/configmaps/app-config" % ns)
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in deps}, cm["data"]["DATABASE_ROLE"]


def dns(hv):
    client = boto3.client("route53", endpoint_url=hv["fediflow_aws_endpoint_url"], region_name="us-east-1",
                          aws_access_key_id=hv["fediflow_aws_access_key"],
                          aws_secret_access_key=hv["fediflow_aws_secret_key"])
    zone = [z for z in client.list_hosted_zones()["HostedZones"] if z["Name"] == hv["fediflow_dns_zone"]][0]
    sets = client.list_resource_record_sets(HostedZoneId=zone["Id"], StartRecordName=hv["fediflow_app_record"],
                                            StartRecordType="A")["ResourceRecordSets"]
    rr = [s for s in sets if s["Name"] == hv["fediflow_app_record"] and s["Type"] == "A"][0]
    return [r["Value"] for r in rr["ResourceRecords"]]


def failover(tmp_path, *extra, check=True):
    proc, result, took = playbook_result("failover.yml", "region_failover_result_file", tmp_path / "failover-result.json",
                                         *extra, check=check)
    return proc, took, result
