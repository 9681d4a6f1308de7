"""What every rpc needs: the one place where it is declared. The interceptor (service.auth)
enforces it, refusing any method missing here; a test walks every rpc of every service the
server offers (by reflection) and fails when one is missing, and the README's table of rpcs
and REST paths is rendered from this table and the protos' HTTP bindings."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.access import Privilege

EC = Privilege.EVENTS_CREATE
ER = Privilege.EVENTS_READ
EU = Privilege.EVENTS_UPDATE
ED = Privilege.EVENTS_DELETE
TR = Privilege.EVENT_TYPES_READ
TW = Privilege.EVENT_TYPES_WRITE
JW = Privilege.JOBS_WRITE
SW = Privilege.SHARING_WRITE
ADMIN = Privilege.ADMIN


@dataclass(frozen=True, slots=True)
class Access:
    """What a call needs: credentials (unless public) holding every privilege listed."""

    privileges: tuple[Privilege, ...] = ()
    credentials: bool = True

    @property
    def label(self) -> str:
        if not self.credentials:
            return "none (no credentials)"
        return " + ".join(p.value for p in self.privileges) or "any valid credentials"


def needs(*privileges: Privilege) -> Access:
    return Access(privileges)


PUBLIC = Access(credentials=False)
SIGNED_IN = Access()

# Full service name -> method -> what it needs.
RPC_ACCESS: dict[str, dict[str, Access]] = {
    "eventmgmt.v1.EventService": {
        "CreateEvent": needs(EC),
        "GetEvent": needs(ER),
        "ListEvents": needs(ER),
        "UpdateEvent": needs(EU),
        "AcknowledgeEvent": needs(EU),
        "ClearEvent": needs(EU),
    },
    "eventmgmt.v1.EventRestService": {
        "RestGetApiRoot": SIGNED_IN,
        "RestCreateEvent": needs(EC),
        "RestGetEvent": needs(ER),
        "RestListEvents": needs(ER),
        "RestUpdateEvent": needs(EU),
        "RestAcknowledgeEvent": needs(EU),
        "RestClearEvent": needs(EU),
        "RestSubscribeEvents": needs(ER),
    },
    "eventmgmt.v1.EventStreamService": {
        "SubscribeEvents": needs(ER),
        "IngestEvents": needs(EC),
    },
    "eventmgmt.v1.EventSearchService": {
        "FindEvents": needs(ER),
        "RestFindEvents": needs(ER),
    },
    "eventmgmt.v1.EventSearchRestService": {"RestFindEvents": needs(ER)},
    "eventmgmt.v1.EventJobService": {
        "SubmitCreateEventsJob": needs(JW, EC),
        "GetCreateEventsJob": needs(ER),
        "SubmitDeleteEventsJob": needs(JW, ED),
        "GetDeleteEventsJob": needs(ER),
        # What acknowledging and clearing one alarm needs.
        "SubmitAcknowledgeEventsJob": needs(EU),
        "GetAcknowledgeEventsJob": needs(ER),
        "SubmitClearEventsJob": needs(EU),
        "GetClearEventsJob": needs(ER),
    },
    "eventmgmt.v1.EventJobRestService": {
        "RestSubmitCreateEventsJob": needs(JW, EC),
        "RestGetCreateEventsJob": needs(ER),
        "RestSubmitDeleteEventsJob": needs(JW, ED),
        "RestGetDeleteEventsJob": needs(ER),
        "RestSubmitAcknowledgeEventsJob": needs(EU),
        "RestGetAcknowledgeEventsJob": needs(ER),
        "RestSubmitClearEventsJob": needs(EU),
        "RestGetClearEventsJob": needs(ER),
    },
    "eventmgmt.v1.EventTypeService": {
        "CreateEventType": needs(TW),
        "GetEventType": needs(TR),
        "ListEventTypes": needs(TR),
        "UpdateEventType": needs(TW),
        "DeleteEventType": needs(TW),
    },
    "eventmgmt.v1.EventTypeRestService": {
        "RestCreateEventType": needs(TW),
        "RestGetEventType": needs(TR),
        "RestListEventTypes": needs(TR),
        "RestUpdateEventType": needs(TW),
        "RestPatchEventType": needs(TW),
        "RestDeleteEventType": needs(TW),
    },
    "eventmgmt.v1.SharingService": {
        "ShareEntity": needs(SW),
        "ListEntityShares": needs(ER),
        "UnshareEntity": needs(SW),
    },
    "eventmgmt.v1.SharingRestService": {
        "RestShareEntity": needs(SW),
        "RestListEntityShares": needs(ER),
        "RestUnshareEntity": needs(SW),
    },
    "eventmgmt.v1.RegistryService": {
        "CreateDevice": needs(ADMIN),
        "ListDevices": needs(ADMIN),
        "DisableDevice": needs(ADMIN),
        "CreateApp": needs(ADMIN),
        "ListApps": needs(ADMIN),
        "DisableApp": needs(ADMIN),
    },
    "eventmgmt.v1.AuthService": {"Login": PUBLIC, "Logout": SIGNED_IN},
    "eventmgmt.v1.UserService": {
        "CreateUser": needs(ADMIN),
        "ListUsers": needs(ADMIN),
        "GetUser": needs(ADMIN),
        "UpdateUser": needs(ADMIN),
        "RevokeUser": needs(ADMIN),
    },
    "eventmgmt.v1.DeviceEventService": {"ReportDeviceEvent": needs(EC)},
    "eventmgmt.v1.DeviceEventRestService": {"RestReportDeviceEvent": needs(EC)},
    "grpc.health.v1.Health": {"Check": PUBLIC, "List": PUBLIC, "Watch": PUBLIC},
    "grpc.reflection.v1alpha.ServerReflection": {"ServerReflectionInfo": PUBLIC},
}

# "/package.Service/Method" -> what it needs, as the interceptor sees a call's method.
METHOD_ACCESS: dict[str, Access] = {
    f"/{service}/{method}": access
    for service, methods in RPC_ACCESS.items()
    for method, access in methods.items()
}


def access_for(method: str) -> Access | None:
    """What a call of `method` ("/package.Service/Method") needs; None when undeclared."""
    return METHOD_ACCESS.get(method)


def _http_bindings(service: str, method: str) -> list[str]:
    """`VERB /path` of each google.api.http binding of an rpc (none for gRPC-only rpcs)."""
    from google.protobuf import descriptor_pool

    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return []
    options = descriptor.methods_by_name[method].GetOptions()
    rules = [v for f, v in options.ListFields() if f.full_name == "google.api.http"]
    if not rules:
        return []
    rule = rules[0]
    bindings = []
    for binding in [rule, *rule.additional_bindings]:
        verb = binding.WhichOneof("pattern")
        if verb is not None and verb != "custom":
            bindings.append(f"{verb.upper()} {getattr(binding, verb)}")
    return bindings


def access_table() -> str:
    """The README's table: every rpc, its REST paths and what it needs (Markdown)."""
    import importlib
    import pkgutil

    from service import v1

    for module in pkgutil.iter_modules(v1.__path__):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"service.v1.{module.name}")
    lines = ["| rpc | REST | needs |", "| --- | --- | --- |"]
    for service_name, methods in RPC_ACCESS.items():
        for method, access in methods.items():
            rest = "<br>".join(f"`{b}`" for b in _http_bindings(service_name, method)) or "—"
            lines.append(f"| `{service_name}/{method}` | {rest} | {access.label} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(access_table(), end="")
