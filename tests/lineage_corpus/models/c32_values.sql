select x, y from (values (1, 'a'), (2, 'b')) as v(x, y)
