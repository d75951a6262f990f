# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    # AWS connection options, named as in amazon.aws.
    DOCUMENTATION = r"""
options:
  region:
    description:
      - The AWS region to use. Falls back to E(AWS_REGION) or E(AWS_DEFAULT_REGION).
    type: str
    aliases: [ aws_region ]
  endpoint_url:
    description:
      - URL of an S3 / Route53 compatible endpoint (for example a test double or a VPC
        endpoint). Falls back to E(AWS_ENDPOINT_URL).
    type: str
    aliases: [ aws_endpoint_url ]
  access_key:
    description:
      - AWS access key ID. Falls back to E(AWS_ACCESS_KEY_ID).
    type: str
    aliases: [ aws_access_key_id, aws_access_key ]
  secret_key:
    description:
      - AWS secret access key. Falls back to E(AWS_SECRET_ACCESS_KEY).
    type: str
    aliases: [ aws_secret_access_key, aws_secret_key ]
  session_token:
    description:
      - AWS session token for temporary credentials. Falls back to E(AWS_SESSION_TOKEN).
    type: str
    aliases: [ aws_session_token ]
  profile:
    description:
      - A named profile from the AWS shared credentials file. Falls back to E(AWS_PROFILE).
    type: str
    aliases: [ aws_profile ]
  validate_certs:
    description:
      - Whether the endpoint's TLS certificate is verified. Leave it on, since V(false) accepts any server that
        answers. Refused together with O(aws_ca_bundle).
    type: bool
    default: true
  aws_ca_bundle:
    description:
      - File of the certificate authorities that may sign the endpoint's certificate (for example a private
        S3 endpoint's). Falls back to E(AWS_CA_BUNDLE), then botocore's own bundle.
      - A path that is not a readable file is refused before any request.
    type: path
requirements:
  - boto3 and botocore on the managed node.
"""
