{% test unique_together(model, columns) %}
{%- set settings = {'sep': ', '} -%}
{%- do settings.update({'list': columns | join(settings['sep'])}) -%}
select {{ settings.get('list') }}
from {{ model }}
group by {{ settings['list'] }}
having count(*) > 1
{% endtest %}
