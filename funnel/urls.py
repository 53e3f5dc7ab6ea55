from django.urls import path

from funnel import views

app_name = "funnel"
urlpatterns = [
    path("", views.board, name="board"),
    path("list/", views.deal_list, name="list"),
    path("new/", views.new_lead, name="new"),
    path("<int:pk>/", views.deal_detail, name="detail"),
    path("<int:pk>/details/", views.edit_details, name="details"),
    path("<int:pk>/qualification/", views.save_qualification, name="qualification"),
    path("<int:pk>/needs/", views.save_needs, name="needs"),
    path("<int:pk>/activities/", views.log_activity, name="activity"),
    path("<int:pk>/move/", views.move, name="move"),
    path("<int:pk>/offers/", views.start_offer, name="offer"),
    path("<int:pk>/offers/<int:offer_pk>/send/", views.send_offer, name="offer_send"),
    path("<int:pk>/offers/<int:offer_pk>/accept/", views.accept_offer, name="offer_accept"),
    path("<int:pk>/offers/<int:offer_pk>/reject/", views.reject_offer, name="offer_reject"),
    path("<int:pk>/terms/", views.agree_terms, name="terms"),
    path("<int:pk>/rounds/", views.add_round, name="round"),
    path("<int:pk>/closing/", views.save_closing, name="closing"),
    path("<int:pk>/lost/", views.mark_lost, name="lost"),
    path("<int:pk>/disqualify/", views.disqualify, name="disqualify"),
    path("<int:pk>/reopen/", views.reopen, name="reopen"),
]
