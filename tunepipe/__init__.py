"""tunepipe: the library behind the pipeline's stages (stages/ runs it, flows/ schedules it; the README's
"How the code is laid out" gives the map)."""
