from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from workspaces import services
from workspaces.management.cli import get_workspace
from workspaces.models import Membership

ROLES = ", ".join(Membership.Role.values)


class Command(BaseCommand):
    help = (
        "Add a user to a workspace with a role, or change their role (running it again with the "
        "same role changes nothing). With --email a missing user is created without a password. "
        "Prints '<username> <role>' as the last line of stdout."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Workspace slug.")
        parser.add_argument("--username", required=True, help="The user to add.")
        parser.add_argument(
            "--email", help="Create the user with this e-mail if they do not exist (they then need a password)."
        )
        # Checked in handle() rather than with argparse choices, for an error naming the roles.
        parser.add_argument("--role", required=True, help=f"One of: {ROLES}.")

    def handle(self, *args, **options):
        role = options["role"].strip().lower()
        if role not in Membership.Role.values:
            raise CommandError(f"--role: unknown role '{options['role']}'; choose one of {ROLES}.")
        workspace = get_workspace(options["workspace"])
        user = self._get_or_create_user(options["username"], options["email"])
        before = Membership.objects.filter(workspace=workspace, user=user).values_list("role", flat=True).first()
        try:
            services.membership_add(workspace=workspace, user=user, role=role, via="command")
        except ValidationError as exc:
            raise CommandError(f"--role: {' '.join(exc.messages)}") from None
        name = user.get_username()
        if before is None:
            self.stderr.write(f"Added {name} to workspace '{workspace.slug}' as {role}.")
        elif before == role:
            self.stderr.write(f"{name} already is {role} in workspace '{workspace.slug}'; nothing changed.")
        else:
            self.stderr.write(f"Changed {name}'s role in workspace '{workspace.slug}' from {before} to {role}.")
        self.stdout.write(f"{name} {role}")

    def _get_or_create_user(self, username: str, email: str | None):
        User = get_user_model()
        try:
            user = User.objects.get_by_natural_key(username)
        except User.DoesNotExist:
            pass
        else:
            if email and email.lower() != (user.email or "").lower():
                self.stderr.write(f"User {username} exists with another e-mail ({user.email or 'none'}); kept it.")
            return user
        if not email:
            raise CommandError(f"--username: no user named '{username}'; pass --email to create the account.")
        user = User(username=username, email=User.objects.normalize_email(email))
        user.set_unusable_password()
        try:
            user.full_clean()
        except ValidationError as exc:
            raise CommandError(
                "\n".join(f"--{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
            ) from None
        user.save()
        self.stderr.write(
            f"Created user {username} <{user.email}> without a password. Set one with: "
            f"python manage.py changepassword {username}"
        )
        return user
