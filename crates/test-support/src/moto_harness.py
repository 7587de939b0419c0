# The test harness's patches to moto, loaded before its server starts. Each one fills a gap
# that `/work/shared/emulator.md`-style notes list (see the crate's docs), so that the sample
# monorepo deploys in the emulator as it does in AWS. The product never relies on them: its
# own handling of AWS's behaviour is tested with recorded AWS responses.
import uuid

from moto.cloudformation.models import CloudFormationBackend, Stack
from moto.core.common_models import CloudFormationModel


# 1. moto rebuilds a stack's Outputs on create-stack/update-stack but not after a change set
#    runs, so every stack deployed by change set reads as having no outputs.
_execute_change_set = CloudFormationBackend.execute_change_set


def execute_change_set(self, change_set_name, stack_name=None):
    _execute_change_set(self, change_set_name, stack_name)
    change_set = self.change_sets.get(change_set_name) or next(
        (c for c in self.change_sets.values() if c.change_set_name == change_set_name), None
    )
    if change_set is not None:
        stack = self.stacks[change_set.stack_id]
        stack._parse_template()
        stack.output_map = stack._create_output_map()


CloudFormationBackend.execute_change_set = execute_change_set


# 2. `!GetAtt Nested.Outputs.Name` on a nested stack: moto's Stack model has no GetAtt at all.
def _nested_output(self, attribute_name):
    from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

    prefix, _, name = attribute_name.partition(".")
    output = self.output_map.get(name) if prefix == "Outputs" else None
    if output is None:
        raise UnformattedGetAttTemplateException()
    return output.value


Stack.get_cfn_attribute = _nested_output


def _backend(module, attribute, account_id, region_name):
    backends = getattr(__import__(module, fromlist=[attribute]), attribute)
    return backends[account_id][region_name]


# 3. Resource types moto's CloudFormation skips silently, which makes every `!GetAtt` on them,
#    and so every output and nested stack that uses one, fail. Each is created in moto's own
#    service backend where it has one, so the APIs see what the template made.
class HarnessDistribution(CloudFormationModel):
    """AWS::CloudFront::Distribution, made through moto's CloudFront backend."""

    # moto files a model under the service named by its module's second part.
    __module__ = "moto.cloudfront.harness"

    def __init__(self, distribution):
        self.distribution = distribution

    @staticmethod
    def cloudformation_name_type():
        return ""

    @staticmethod
    def cloudformation_type():
        return "AWS::CloudFront::Distribution"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        config = cloudformation_json.get("Properties", {}).get("DistributionConfig", {})
        origins = [
            {"Id": o.get("Id", "origin"), "DomainName": "origin.s3.amazonaws.com"} for o in config.get("Origins", [])
        ] or [{"Id": "origin", "DomainName": "origin.s3.amazonaws.com"}]
        behaviour = config.get("DefaultCacheBehavior", {})
        dist_config = {
            "CallerReference": str(uuid.uuid4()),
            "Origins": {"Quantity": len(origins), "Items": origins},
            "DefaultCacheBehavior": {
                "TargetOriginId": behaviour.get("TargetOriginId", origins[0]["Id"]),
                "ViewerProtocolPolicy": behaviour.get("ViewerProtocolPolicy", "redirect-to-https"),
            },
            "Comment": str(config.get("Comment", "")),
            "Enabled": True,
        }
        backend = _backend("moto.cloudfront.models", "cloudfront_backends", account_id, "global")
        distribution, _, _ = backend.create_distribution(dist_config, [])
        return cls(distribution)

    @property
    def physical_resource_id(self):
        return self.distribution.distribution_id

    @classmethod
    def has_cfn_attr(cls, attr):
        return attr in ["DomainName", "Id"]

    def get_cfn_attribute(self, attribute_name):
        if attribute_name == "DomainName":
            return self.distribution.domain_name
        return self.distribution.distribution_id


class HarnessOriginAccessControl(CloudFormationModel):
    """AWS::CloudFront::OriginAccessControl: an id, nothing behind it."""

    # moto files a model under the service named by its module's second part.
    __module__ = "moto.cloudfront.harness"

    def __init__(self):
        self.id = "E" + uuid.uuid4().hex[:13].upper()

    @staticmethod
    def cloudformation_name_type():
        return ""

    @staticmethod
    def cloudformation_type():
        return "AWS::CloudFront::OriginAccessControl"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        return cls()

    @property
    def physical_resource_id(self):
        return self.id

    @classmethod
    def has_cfn_attr(cls, attr):
        return attr == "Id"

    def get_cfn_attribute(self, attribute_name):
        return self.id


class HarnessHttpApi(CloudFormationModel):
    """AWS::ApiGatewayV2::Api, made through moto's API Gateway v2 backend."""

    # moto files a model under the service named by its module's second part.
    __module__ = "moto.apigatewayv2.harness"

    def __init__(self, api):
        self.api = api

    @staticmethod
    def cloudformation_name_type():
        return "Name"

    @staticmethod
    def cloudformation_type():
        return "AWS::ApiGatewayV2::Api"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        props = cloudformation_json.get("Properties", {})
        backend = _backend("moto.apigatewayv2.models", "apigatewayv2_backends", account_id, region_name)
        api = backend.create_api(
            api_key_selection_expression=None,
            cors_configuration=props.get("CorsConfiguration"),
            description=props.get("Description"),
            disable_schema_validation=None,
            disable_execute_api_endpoint=props.get("DisableExecuteApiEndpoint"),
            name=props.get("Name", resource_name),
            protocol_type=props.get("ProtocolType", "HTTP"),
            route_selection_expression=None,
            tags=props.get("Tags") or {},
            version=None,
        )
        return cls(api)

    @property
    def physical_resource_id(self):
        return self.api.api_id

    @classmethod
    def has_cfn_attr(cls, attr):
        return attr in ["ApiEndpoint", "ApiId"]

    def get_cfn_attribute(self, attribute_name):
        if attribute_name == "ApiEndpoint":
            return self.api.api_endpoint
        return self.api.api_id


class HarnessBucketPolicy(CloudFormationModel):
    """AWS::S3::BucketPolicy, put through moto's S3 backend."""

    # moto files a model under the service named by its module's second part.
    __module__ = "moto.s3.harness"

    def __init__(self, bucket):
        self.bucket = bucket

    @staticmethod
    def cloudformation_name_type():
        return ""

    @staticmethod
    def cloudformation_type():
        return "AWS::S3::BucketPolicy"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        import json

        from moto.s3.models import s3_backends

        props = cloudformation_json.get("Properties", {})
        bucket = props["Bucket"]
        document = props.get("PolicyDocument", {})
        s3_backends[account_id]["aws"].put_bucket_policy(bucket, json.dumps(document).encode())
        return cls(bucket)

    @property
    def physical_resource_id(self):
        return self.bucket


# 4. AWS::S3::Bucket's PublicAccessBlockConfiguration: moto's CloudFormation applies the
#    bucket's encryption and tags but drops this, so a bucket the template locks down reads as
#    public to GetPublicAccessBlock (and the publisher's site check reports P007).
from moto.s3.models import FakeBucket  # noqa: E402

_create_bucket_from_cfn = FakeBucket.create_from_cloudformation_json.__func__


@classmethod
def _create_bucket_with_access_block(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    bucket = _create_bucket_from_cfn(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    block = cloudformation_json.get("Properties", {}).get("PublicAccessBlockConfiguration")
    if block:
        s3_backends[account_id][get_partition(region_name)].put_public_access_block(bucket.name, block)
    return bucket


FakeBucket.create_from_cloudformation_json = _create_bucket_with_access_block


# 6. ListStackResources: moto lists a resource type it does not support (skipped silently at
#    create) with an empty logical ID and type, where AWS lists every resource of the template.
#    The deployer compares a completed stack with its change set, so the harness names them.
class _Unsupported:
    def __init__(self, logical_id, resource_type):
        self.logical_resource_id = logical_id
        self.physical_resource_id = f"{logical_id}-unsupported-by-moto"
        self.cf_resource_type = resource_type


_list_stack_resources = CloudFormationBackend.list_stack_resources


def list_stack_resources(self, stack_name_or_id):
    stack, resources = _list_stack_resources(self, stack_name_or_id)
    resource_map = stack.resource_map
    named = []
    for logical_id in resource_map:
        resource = resource_map._parsed_resources.get(logical_id)
        if resource is None or not getattr(resource, "logical_resource_id", ""):
            kind = resource_map._resource_json_map.get(logical_id, {}).get("Type", "")
            resource = _Unsupported(logical_id, kind)
        named.append(resource)
    return stack, named


CloudFormationBackend.list_stack_resources = list_stack_resources


# 5. A health check that says what it means: moto's own `/moto-api/data.json` answers 500 as
#    soon as some resources are deployed, so a live emulator read as dead. This route answers
#    whatever the server holds, without touching its state, and names the server (its pid), so a
#    caller can tell its own emulator from something else listening on the port.
import json as _json  # noqa: E402
import os as _os  # noqa: E402

from moto.moto_server.werkzeug_app import DomainDispatcherApplication  # noqa: E402

HEALTH_PATH = "/moto-harness/health"
_dispatch = DomainDispatcherApplication.__call__


def _dispatch_with_health(self, environ, start_response):
    if environ.get("PATH_INFO") == HEALTH_PATH and environ.get("REQUEST_METHOD") == "GET":
        body = _json.dumps({"emulator": "moto-harness", "pid": _os.getpid()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return _dispatch(self, environ, start_response)


DomainDispatcherApplication.__call__ = _dispatch_with_health
