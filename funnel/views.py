from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import render

from funnel.models import Deal
from funnel.stages import ORDER


@login_required
def home(request):
    """The signed-in user's open deals per stage (through visible_to, like every view)."""
    counts = dict(
        Deal.objects.visible_to(request.user)
        .open()
        .order_by()
        .values_list("stage")
        .annotate(n=Count("pk"))
    )
    return render(request, "funnel/home.html", {"stages": [(s, counts.get(s, 0)) for s in ORDER]})
