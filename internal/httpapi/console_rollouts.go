package httpapi

func (s *Server) rolloutPages(mux *router) {}
