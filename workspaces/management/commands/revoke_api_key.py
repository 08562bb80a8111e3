from django.core.management.base import BaseCommand, CommandError

from workspaces import keys, services
from workspaces.management.cli import get_workspace
from workspaces.models import ApiKey, Workspace


class Command(BaseCommand):
    help = "Revoke an API key, found by its prefix (pk-xxxxxxxx) or its name. Prints the prefix."

    def add_arguments(self, parser):
        parser.add_argument("key", metavar="PREFIX_OR_NAME", help="Key prefix, e.g. pk-AbCd1234, or the key's name.")
        parser.add_argument("--workspace", required=True, help="Workspace slug.")

    def handle(self, *args, key: str, **options):
        workspace = get_workspace(options["workspace"])
        api_key = _find_key(workspace, key)
        if api_key.is_active:
            services.api_key_revoke(api_key=api_key, via="command")
            self.stderr.write(f"Revoked API key '{api_key.name}' ({api_key.prefix}…).")
        else:
            self.stderr.write(f"API key '{api_key.name}' ({api_key.prefix}…) was already revoked.")
        self.stdout.write(api_key.prefix)


def _find_key(workspace: Workspace, value: str) -> ApiKey:
    if value.startswith(keys.KEY_PREFIX):
        # A prefix, or a whole key pasted by mistake: either way its first characters find it.
        found = workspace.api_keys.filter(prefix=keys.lookup_prefix(value)).first()
        if found is None:
            raise CommandError(
                f"PREFIX_OR_NAME: no API key with prefix '{value[:11]}' in workspace '{workspace.slug}'."
            )
        return found
    matches = list(workspace.api_keys.filter(name=value))
    if len(matches) > 1:
        # Several keys share a name (e.g. a rotated one); only an unambiguous active key is revoked.
        active = [k for k in matches if k.is_active]
        if len(active) == 1:
            return active[0]
        prefixes = ", ".join(k.prefix for k in (active or matches))
        raise CommandError(f"PREFIX_OR_NAME: several API keys are named '{value}' ({prefixes}); pass the prefix.")
    if not matches:
        raise CommandError(f"PREFIX_OR_NAME: no API key named '{value}' in workspace '{workspace.slug}'.")
    return matches[0]
