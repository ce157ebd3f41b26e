"""Seed the local moto stack for infra/local-stack.sh (the aws CLI is not needed).

Waits until moto_server and scim2-server answer, then creates
  - bucket  scim-uploads
  - queues  scim-work-dlq, and scim-work redriving to it
  - secret  scim-provisioner: {"base_url", "auth_type": "bearer", "token"}
and prints the environment that points the function or the CLI at them.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

import boto3

BUCKET = "scim-uploads"
QUEUE = "scim-work"
DLQ = "scim-work-dlq"
SECRET = "scim-provisioner"
REGION = "us-east-1"


def wait_for(url, headers=None, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2):
                return
        except urllib.error.HTTPError as error:  # it answers: up, if unhappy
            return error.close()
        except OSError as error:
            last = error
            time.sleep(0.2)
    sys.exit(f"seed_local: {url} did not answer within {timeout:.0f}s: {last}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--moto", required=True, help="moto endpoint, e.g. http://127.0.0.1:4566")
    parser.add_argument("--scim", required=True, help="scim2-server base URL")
    parser.add_argument("--token", required=True, help="scim2-server bearer token")
    args = parser.parse_args()

    wait_for(args.moto + "/moto-api/")
    wait_for(args.scim + "/ServiceProviderConfig", {"Authorization": "Bearer " + args.token})

    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
    )
    s3 = session.client("s3", endpoint_url=args.moto)
    sqs = session.client("sqs", endpoint_url=args.moto)
    secrets = session.client("secretsmanager", endpoint_url=args.moto)

    s3.create_bucket(Bucket=BUCKET)
    dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=QUEUE,
        Attributes={
            "VisibilityTimeout": "120",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
        },
    )["QueueUrl"]
    secret = json.dumps({"base_url": args.scim, "auth_type": "bearer", "token": args.token})
    try:
        secret_arn = secrets.create_secret(Name=SECRET, SecretString=secret)["ARN"]
    except secrets.exceptions.ResourceExistsException:
        secret_arn = secrets.put_secret_value(SecretId=SECRET, SecretString=secret)["ARN"]

    print("local stack ready:")
    print(f"  scim2-server  {args.scim}  (bearer token in the secret)")
    print(f"  moto          {args.moto}  bucket {BUCKET}, queues {QUEUE} + {DLQ}, secret {SECRET}")
    print("environment for the function or the CLI:")
    for name, value in [
        ("AWS_ENDPOINT_URL", args.moto),
        ("S3_FORCE_PATH_STYLE", "true"),
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("SCIM_SECRET_ID", secret_arn),
        ("WORK_QUEUE_URL", queue_url),
        ("REPORT_BUCKET", BUCKET),
    ]:
        print(f"  export {name}={value}")


if __name__ == "__main__":
    main()
