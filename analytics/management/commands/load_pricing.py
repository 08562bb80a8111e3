from django.core.management.base import BaseCommand

from analytics.pricing import load_pricing


class Command(BaseCommand):
    help = "Load model prices from analytics/pricing.json into the ModelPrice table."

    def add_arguments(self, parser):
        parser.add_argument("--overwrite", action="store_true", help="Replace prices edited in the admin.")

    def handle(self, *args, overwrite: bool, **options):
        count = load_pricing(overwrite=overwrite, via="command")
        self.stdout.write(f"{count} prices loaded")
