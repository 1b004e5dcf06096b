"""The project's own pages: a login and a greeting."""

from django.contrib.auth import authenticate, login
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt  # a test client logs in with a plain POST; a real login form keeps CSRF
def login_view(request: HttpRequest) -> HttpResponse:
    user = authenticate(request, username=request.POST.get("user"),
                        password=request.POST.get("password"))
    if user is None:
        return HttpResponse("no\n", status=403)
    login(request, user)
    return HttpResponse(f"logged in as {user.username}\n")


def index(request: HttpRequest) -> HttpResponse:
    name = request.user.username if request.user.is_authenticated else "stranger"
    return HttpResponse(f"hello {name}\n")
